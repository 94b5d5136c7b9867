"""``python -m luod.rest.openapi > api/openapi.json``: the REST API's OpenAPI document, stable
(sorted keys, fixed indentation) so a drift shows as a diff and fails its test."""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from luod.rest.app import create_app
from luod.rest.facade import RestFacade


def document() -> dict[str, Any]:
    """Building the app calls nothing on the facade, so no daemon is needed."""
    return create_app(cast(RestFacade, object())).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
