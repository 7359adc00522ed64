"""Rendering helpers shared by the UI's pages: the template context every page gets, form parsing."""

from pathlib import Path
from typing import Any, cast

import yaml
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig
from markupsafe import Markup
from markdown_it import MarkdownIt

from nexus.core_api.auth.keys import Principal
from nexus.core_api.ui.auth import UiRequest
from nexus.core_api.ui.session import CSRF_FIELD, UiSession
from nexus.domain.roles import Capability, allows

HERE = Path(__file__).parent
# Raw HTML in markdown is shown as text, not rendered: a skill cannot inject markup into the page.
_MD = MarkdownIt("commonmark", {"html": False})


def markdown(text: str) -> Markup:
    return Markup(_MD.render(text or ""))  # markdown-it escapes the text; raw HTML is off


def to_yaml(value: Any) -> str:
    # without a stream, safe_dump returns the text (PyYAML ships no types)
    return cast(str, yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False))


def _setup(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["markdown"] = markdown
    engine.engine.filters["yaml"] = to_yaml
    engine.engine.filters["ago"] = lambda s: (s or "")[:19].replace("T", " ")
    # Compiled now, not by the first request for each page: compiling a page's templates costs it tens of
    # milliseconds (the agent page's four, over 100 ms on a busy machine).
    for name in engine.engine.list_templates():
        engine.engine.get_template(name)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_setup)


def can(request: UiRequest, capability: str) -> bool:
    user = request.user
    return isinstance(user, Principal) and allows(user.role, Capability(capability))


def page(request: UiRequest, name: str, *, status: int = 200, **context: Any) -> Template:
    session: UiSession | None = request.auth
    user = request.user if isinstance(request.user, Principal) else None
    return Template(
        template_name=name,
        status_code=status,
        context={
            "user": user,
            "csrf": session.csrf if session else "",
            "csrf_field": CSRF_FIELD,
            "can": lambda c: can(request, c),
            "path": request.url.path,
            **context,
        },
    )


async def form_of(request: UiRequest) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if k != CSRF_FIELD and isinstance(v, str)}


def words(value: str) -> list[str]:
    """`a, b c` → ['a', 'b', 'c']: list fields typed as text."""
    return [w for w in value.replace(",", " ").split() if w]
