"""Every handler declares where each of its parameters comes from (a body marker on `data`, FromPath /
FromQuery or a QueryParameter), so litestar has nothing it must guess and nothing it deprecates: an
undeclared one is reported here by handler and parameter, with the marker to use."""

import warnings

from nexus.core_api.app import create_app
from nexus.core_api.settings import CoreSettings
from nexus.domain.settings import load_settings


def test_no_handler_leaves_litestar_to_infer_a_parameter() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_app(load_settings(CoreSettings, {}), background=False)
    said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert said == [], "\n".join(said)  # litestar's own (LitestarDeprecationWarning) among them
