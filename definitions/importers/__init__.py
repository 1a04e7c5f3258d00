"""Escalation policies and on-call schedules from other tools' API JSON, as opsflow
definitions: `pagerduty` and `opsgenie` (`opsflow defs import VENDOR FILE...`)."""
