"""Message templates: localisation, subjects, strictness, and the hostile SSTI corpus."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from definitions.templates import (
    MAX_OUTPUT_CHARS,
    TemplateProblem,
    render_message,
    render_string,
    undeclared_variables,
)

CORPUS = Path(__file__).parents[3] / "shared" / "fixtures" / "hostile" / "jinja-ssti.json"
CONTEXT = {"customer": {"name": "Ada"}, "case": {"id": "C-1"}}
# A hang guard, not a speed assertion: the module's own budget is 2 s of rendering, and a
# loaded CI machine may take longer to get there.
TIME_BOUND = 30.0


def test_localised_lookup_with_fallback(template_folder: Path) -> None:
    german = render_message(
        "apology",
        "de-AT",
        {"customer": {"name": "Lena"}, "case": {"id": "7"}},
        folder=template_folder,
    )
    assert german == german.__class__(
        subject="Entschuldigung zu Fall 7", body="Hallo Lena,\nes tut uns leid.\n", language="de"
    )
    french = render_message(
        "apology",
        "fr",
        {"customer": {"name": "Inès"}, "case": {"id": "8"}},
        folder=template_folder,
    )
    assert french.language == "en"
    assert french.subject == "Sorry about case 8"
    assert french.body.startswith("Hello Inès,")


def test_missing_value_and_missing_template_are_problems(template_folder: Path) -> None:
    with pytest.raises(TemplateProblem, match="missing value: 'case' is undefined"):
        render_message("apology", "en", {"customer": {"name": "Ada"}}, folder=template_folder)
    with pytest.raises(TemplateProblem, match="no template 'nope'"):
        render_message("nope", "en", CONTEXT, folder=template_folder)
    with pytest.raises(TemplateProblem, match="bad template name"):
        render_message("../../etc/passwd", "en", CONTEXT, folder=template_folder)
    # A hostile language cannot steer the lookup out of the folder: it falls back to English.
    assert render_message("page", "../../x", CONTEXT, folder=template_folder).language == "en"


def test_subject_cannot_inject_headers(tmp_path: Path) -> None:
    (tmp_path / "t.en.j2").write_text("Subject: Hi {{ name }}\n\nbody\n", encoding="utf-8")
    message = render_message("t", "en", {"name": "x\r\nBcc: evil@example.com"}, folder=tmp_path)
    assert message.subject == "Hi x Bcc: evil@example.com"
    assert "\n" not in (message.subject or "")


def test_undeclared_variables() -> None:
    source = "{% for i in range(3) %}{{ customer.name }}{{ i }}{% endfor %}{% set x = 1 %}{{ x }}"
    assert undeclared_variables(source) == {"customer"}
    with pytest.raises(TemplateProblem, match="syntax error on line 1"):
        undeclared_variables("{{ oops")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
        "{{ 'a{0.__class__}'.format(1) }}",
        "{% include '/etc/passwd' %}",
        "{{ 'A' * 10**9 }}",
        "{% set ns = namespace(v='ab') %}{% for i in range(40) %}{% set ns.v = ns.v ~ ns.v %}"
        "{% endfor %}{{ ns.v|length }}",
        "{% set s = 'ab' * 30000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "{{ ('x' * 60000).join(['y'] * 60000) }}",
        "{{ ('x' * 60000)|replace('x', 'yyyyyyyy') }}",
    ],
)
@pytest.mark.timeout(TIME_BOUND)
def test_injection_and_exhaustion_are_refused(source: str) -> None:
    with pytest.raises(TemplateProblem):
        render_string(source, CONTEXT)


def test_output_is_capped() -> None:
    assert len(render_string("{{ 'x' * 1000 }}", {})) == 1000
    with pytest.raises(TemplateProblem, match="over 65536"):
        render_string("{% for i in range(10000) %}{{ 'y' * 100 }}{% endfor %}", {})
    assert MAX_OUTPUT_CHARS == 64 * 1024


def test_html_variant_escapes() -> None:
    assert render_string("{{ v }}", {"v": "<b>"}, html=True) == "&lt;b&gt;"
    assert render_string("{{ v }}", {"v": "<b>"}) == "<b>"


def _render_with_timeout(payload: str) -> tuple[str, Any]:
    """Render on a daemon thread; a payload that never returns fails the test, never hangs it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = ("rendered", render_string(payload, CONTEXT))
        except TemplateProblem as exc:
            outcome["value"] = ("refused", str(exc))
        except BaseException as exc:  # anything else is a defect we want to see
            outcome["value"] = ("crashed", f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIME_BOUND)
    return outcome.get("value", ("timeout", None))


def test_whole_ssti_corpus_is_refused_or_harmless() -> None:
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    assert "about" in corpus
    payloads = corpus["payloads"]
    assert len(payloads) >= 100
    failures = []
    rendered = 0
    for number, entry in enumerate(payloads):
        kind, value = _render_with_timeout(entry["payload"])
        if kind == "rendered":
            rendered += 1
            harmless = (
                len(value) <= MAX_OUTPUT_CHARS
                and "<class" not in value
                and "__globals__" not in value
                and "uid=" not in value
                and "root:" not in value
            )
            if not harmless:
                failures.append((number, entry["category"], value[:80]))
        elif kind != "refused":
            failures.append((number, entry["category"], kind, value))
    assert failures == []
    # Most payloads are refused outright; the rest (arithmetic, echoed text) render harmlessly.
    assert rendered < 20
