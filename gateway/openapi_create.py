"""The documented body of ``POST /v1/videos``: our JSON, OpenAI's JSON fields, OpenAI's form.

The handler reads the body itself (:mod:`gateway.openai_compat`), so Litestar generates no
request body for it; this module writes it, saying what the validators accept and nothing
more (the API fuzzing test holds the app to it both ways):

- ``application/json``: ``CreateVideoRequest``, with OpenAI's ``seconds``, ``size`` and
  ``input_reference: {"image_url"}`` beside our fields;
- ``multipart/form-data``: ``CreateVideoForm``, every value a string, ``input_reference`` a
  file, nested values in the bracket keys the ``openai`` SDK writes (``metadata[key]``,
  ``routing[providers][]``).

Both say: 10 s at 1080P is refused, however either is spelled (``duration``/``seconds``,
``resolution``/``size``); two spellings of one field must agree; an image is given one way.
"""

from __future__ import annotations

from litestar.openapi.spec import (
    Components,
    Encoding,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Reference,
    RequestBody,
    Schema,
)

from gateway.config import Settings
from gateway.schemas import (
    DATA_URI_PATTERNS,
    HTTP_URL_PATTERN,
    MAX_IMAGE_BASE64,
    MAX_IMAGE_URL,
    MAX_METADATA_KEY,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE,
    MAX_WEBHOOK_URL,
    POSITIVE_DECIMAL,
    PROMPT_PATTERN,
    WHITESPACE,
)
from providers.capabilities import IMAGE_ONLY_MODELS

STRING, NULL, OBJECT = OpenAPIType.STRING, OpenAPIType.NULL, OpenAPIType.OBJECT
JSON_BODY, FORM_BODY, ROUTING = "CreateVideoRequest", "CreateVideoForm", "RoutingOverrides"
IMAGE_MEDIA_TYPES = "image/png, image/jpeg, image/webp"

_WS = f"[{WHITESPACE}]*"
_AT_LEAST_1080 = r"(?:10[89][0-9]|1[1-9][0-9]{2}|[2-9][0-9]{3}|[1-9][0-9]{4})"
SIX, TEN = rf"^{_WS}6{_WS}$", rf"^{_WS}10{_WS}$"
R768, R1080 = rf"^{_WS}768[pP]{_WS}$", rf"^{_WS}1080[pP]{_WS}$"
LARGE_SIZE = rf"^{_AT_LEAST_1080}x{_AT_LEAST_1080}$"
"""``WIDTHxHEIGHT`` read as 1080P: both sides at least 1080."""
_BELOW_1080 = r"(?:[1-9][0-9]{0,2}|10[0-7][0-9])"
_SIDE = r"[1-9][0-9]{0,4}"
SMALL_SIZE = rf"^(?:{_BELOW_1080}x{_SIDE}|{_SIDE}x{_BELOW_1080})$"
"""``WIDTHxHEIGHT`` read as 768P: a side under 1080."""


def _str(pattern: str, **extra: object) -> Schema:
    return Schema(type=STRING, pattern=pattern, **extra)  # type: ignore[arg-type]


def url(max_length: int) -> Schema:
    return Schema(
        type=STRING,
        max_length=max_length,
        pattern=HTTP_URL_PATTERN,
        description="http(s), a host name or IPv4 address, no user info, no whitespace",
    )


def _image() -> list[Schema]:
    data_uris = [
        Schema(
            type=STRING,
            pattern=pattern,
            max_length=len(f"data:image/{kind};base64,") + MAX_IMAGE_BASE64,
            description=f"A base64 {kind} image of at most 10 MiB; the bytes must be a {kind}",
        )
        for kind, pattern in DATA_URI_PATTERNS.items()
    ]
    return [url(MAX_IMAGE_URL), *data_uris]


def _seconds(form: bool) -> tuple[Schema, Schema]:
    """(6, 10), as a form or JSON writes them (JSON may send a number)."""
    if form:
        return _str(SIX), _str(TEN)
    number = OpenAPIType.INTEGER
    return (
        Schema(any_of=[Schema(type=number, const=6), _str(SIX)]),
        Schema(any_of=[Schema(type=number, const=10), _str(TEN)]),
    )


def _sizes() -> tuple[Schema, Schema]:
    """(768P, 1080P) as ``size`` spells them."""
    return (
        Schema(any_of=[_str(R768), _str(SMALL_SIZE)]),
        Schema(any_of=[_str(R1080), _str(LARGE_SIZE)]),
    )


def _rules(served: list[str], *, form: bool) -> list[Schema]:
    """What no property alone says: no 10 s at 1080P; two spellings agree; one image; an
    image-only model gets one. Written with ``anyOf`` (a property constrains only a member that
    is present); a form's "absent" is ``not {}``, as a form field is never null."""
    six, ten = _seconds(form)
    size_768, size_1080 = _sizes()
    small = {"resolution": _str(R768), "size": size_768}
    not_ten_at_1080 = [
        Schema(any_of=[Schema(properties={d: six}), Schema(properties={r: small[r]})])
        for d in ("duration", "seconds")
        for r in ("resolution", "size")
    ]
    agree = [
        Schema(any_of=[Schema(properties={"duration": a, "seconds": a}) for a in (six, ten)]),
        Schema(
            any_of=[
                Schema(properties={"resolution": _str(R768), "size": size_768}),
                Schema(properties={"resolution": _str(R1080), "size": size_1080}),
            ]
        ),
    ]
    # JSON's null counts as absent; a form field is absent or a string (``not {}``: none).
    absent = Schema(schema_not=Schema()) if form else Schema(type=NULL)
    images = ["image", "input_reference", *(["input_reference[image_url]"] if form else [])]
    one_image = [
        Schema(any_of=[Schema(properties={a: absent}), Schema(properties={b: absent})])
        for i, a in enumerate(images)
        for b in images[i + 1 :]
    ]
    return [*not_ten_at_1080, *agree, *one_image, *_image_only(served, form)]


def _image_only(served: list[str], form: bool) -> list[Schema]:
    """An image-only model (Fast) needs a first frame, given one way or another."""
    if not any(m in IMAGE_ONLY_MODELS for m in served):
        return []
    others = [m for m in served if m not in IMAGE_ONLY_MODELS]
    given = [
        Schema(required=["image"], properties={"image": Schema(type=STRING)}),
        *(
            [Schema(required=["input_reference"]), Schema(required=["input_reference[image_url]"])]
            if form
            else [
                Schema(
                    required=["input_reference"],
                    properties={"input_reference": Schema(type=OBJECT)},
                )
            ]
        ),
    ]
    other_model = [Schema(properties={"model": Schema(type=STRING, enum=others)})] if others else []
    return [Schema(any_of=[*other_model, *given])]


def _common(settings: Settings, *, form: bool, webhooks: bool) -> dict[str, Schema | Reference]:
    served = _served(settings)
    six, ten = _seconds(form)
    seconds = Schema(any_of=[six, ten], description="Seconds: 6 or 10", default=6)
    size_768, size_1080 = _sizes()
    properties: dict[str, Schema | Reference] = {
        "model": Schema(
            type=STRING, enum=served, default="hailuo-2.3", description="A model a provider serves"
        ),
        "tier": Schema(type=STRING, enum=["standard", "pro"], default="standard"),
        "prompt": _str(
            PROMPT_PATTERN, description="1–2000 characters once surrounding whitespace is trimmed"
        ),
        "image": Schema(
            any_of=[*_image()] if form else [*_image(), Schema(type=NULL)],
            description="The first frame: an http(s) URL or a data URI; absent = text-to-video",
        ),
        "duration": seconds,
        "seconds": Schema(any_of=[six, ten], description="OpenAI's name for duration"),
        "resolution": _str(
            rf"^{_WS}(?:768|1080)[pP]{_WS}$",
            default="768P",
            examples=["768P", "1080P"],
            description="768P or 1080P, case-insensitive",
        ),
        "size": Schema(
            any_of=[size_768, size_1080],
            description="OpenAI's name for resolution: 768P, 1080P, or WIDTHxHEIGHT (1080P "
            "when the short side is at least 1080, else 768P)",
        ),
    }
    if webhooks:
        properties["webhook_url"] = Schema(
            any_of=[url(MAX_WEBHOOK_URL)] if form else [url(MAX_WEBHOOK_URL), Schema(type=NULL)],
            description="Receives the final task object, signed (Standard Webhooks)",
        )
    return properties


def json_schema(settings: Settings, *, webhooks: bool) -> Schema:
    properties = _common(settings, form=False, webhooks=webhooks)
    properties["input_reference"] = Schema(
        any_of=[
            Schema(
                type=OBJECT,
                properties={"image_url": Schema(any_of=_image())},
                required=["image_url"],
                additional_properties=False,
            ),
            Schema(type=NULL),
        ],
        description='OpenAI\'s form of image: {"image_url": URL or data URI}',
    )
    properties["metadata"] = Schema(
        type=OBJECT,
        max_properties=MAX_METADATA_KEYS,
        property_names=Schema(type=STRING, min_length=1, max_length=MAX_METADATA_KEY),
        additional_properties=Schema(type=STRING, max_length=MAX_METADATA_VALUE),
        description="Echoed back on the task",
    )
    properties["routing"] = Schema(
        one_of=[Reference(f"#/components/schemas/{ROUTING}"), Schema(type=NULL)]
    )
    return Schema(
        type=OBJECT,
        title=JSON_BODY,
        properties=properties,
        required=["prompt"],
        additional_properties=False,
        all_of=_rules(_served(settings), form=False),
    )


def form_schema(settings: Settings, *, webhooks: bool) -> Schema:
    properties = _common(settings, form=True, webhooks=webhooks)
    for prop in properties.values():
        # No examples or defaults: schemathesis's examples phase sends every property's at
        # once, ignoring the rules between them (10 s with 1080P, an image given twice).
        if isinstance(prop, Schema):
            prop.default = prop.examples = None
    properties["input_reference"] = Schema(
        type=STRING,
        format=OpenAPIFormat.BINARY,
        description="The first frame as an uploaded png, jpeg or webp file (at most 10 MiB)",
    )
    properties["input_reference[image_url]"] = Schema(
        any_of=_image(), description="The first frame as an http(s) URL or a data URI"
    )
    names = _provider_names(settings)
    properties["routing[strategy]"] = Schema(
        type=STRING, enum=["cheapest", "healthiest", "priority", "weighted"]
    )
    properties["routing[providers][]"] = Schema(
        type=OpenAPIType.ARRAY, min_items=1, max_items=16, items=Schema(type=STRING, enum=names),
        description="An allow-list of enabled providers, in preference order (repeat the field)",
    )  # fmt: skip
    properties["routing[max_price_usd]"] = _str(POSITIVE_DECIMAL)
    return Schema(
        type=OBJECT,
        title=FORM_BODY,
        properties=properties,
        pattern_properties={
            # One form field per entry, ``metadata[order]=A-1``, at most 16.
            rf"^metadata\[[ !#-Z^-~]{{1,{MAX_METADATA_KEY}}}\]$": Schema(
                type=STRING, max_length=MAX_METADATA_VALUE
            )
        },
        required=["prompt"],
        additional_properties=False,
        all_of=_rules(_served(settings), form=True),
    )


def routing_schema(settings: Settings) -> Schema:
    return Schema(
        type=OBJECT,
        title=ROUTING,
        properties={
            "strategy": Schema(
                any_of=[
                    Schema(type=STRING, enum=["cheapest", "healthiest", "priority", "weighted"]),
                    Schema(type=NULL),
                ]
            ),
            "providers": Schema(
                any_of=[
                    Schema(
                        type=OpenAPIType.ARRAY,
                        min_items=1,
                        max_items=16,
                        items=Schema(type=STRING, enum=_provider_names(settings)),
                    ),
                    Schema(type=NULL),
                ],
                description="An allow-list of enabled providers, in preference order",
            ),
            "max_price_usd": Schema(
                any_of=[Schema(type=OpenAPIType.NUMBER, exclusive_minimum=0), Schema(type=NULL)],
                description="Only providers whose price for this request is at most this",
            ),
        },
        additional_properties=False,
        description="Per-request routing overrides",
    )


def _served(settings: Settings) -> list[str]:
    return sorted({m for p in settings.providers.values() if p.enabled for m in p.served_models})


def _provider_names(settings: Settings) -> list[str]:
    return [name for name, p in settings.providers.items() if p.enabled]


def create_body(components: Components, settings: Settings, *, webhooks: bool) -> RequestBody:
    """Register the create body's schemas in ``components``; the request body naming them."""
    schemas = components.schemas
    schemas[JSON_BODY] = json_schema(settings, webhooks=webhooks)
    schemas[FORM_BODY] = form_schema(settings, webhooks=webhooks)
    schemas[ROUTING] = routing_schema(settings)
    return RequestBody(
        required=True,
        description="Our JSON (OpenAI's field names taken too) or OpenAI's multipart form",
        content={
            "application/json": OpenAPIMediaType(
                schema=Reference(f"#/components/schemas/{JSON_BODY}")
            ),
            "multipart/form-data": OpenAPIMediaType(
                schema=Reference(f"#/components/schemas/{FORM_BODY}"),
                encoding={"input_reference": Encoding(content_type=IMAGE_MEDIA_TYPES)},
            ),
        },
    )
