"""The API contract: every response the integration tests receive is checked
against docs/openapi.json (daemon.py's Client calls check_response).

For a request (method, path) and its answer (status, content type, body):
  - the path must match one of the document's path templates (a {param}
    is one segment; a template's last {param} named "rest" takes the rest);
    a path that matches none must be the documented 404 not_found, a known
    path with an undocumented method the documented 405;
  - the operation must list the status (or a "default" response);
  - a JSON or problem+json body must be a media type the response lists,
    and validate against its schema (JSON Schema 2020-12, as OpenAPI 3.1
    says), $refs resolved inside the document;
  - a response that lists no content must have no body;
  - given the answer's headers: each header the response marks required
    is there, and each it documents matches its schema; an OPTIONS 204's
    Allow is exactly the path's documented methods and OPTIONS.
A mismatch raises ContractError naming the route, the status, the JSON path
in the body and the schema that refused it.

Off with CELL_OPENAPI_CHECK=0 in the environment, or per client
(Client.openapi = False) for a test that talks to something else."""
import json
import os
import re
import urllib.parse

DOC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "openapi.json")
DOC_URI = "urn:cell:openapi.json"
ENABLED = os.environ.get("CELL_OPENAPI_CHECK", "1") != "0"
JSON_TYPES = ("application/json", "application/problem+json")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class ContractError(AssertionError):
    pass


_state = {}


def document():
    if "doc" not in _state:
        with open(DOC_PATH) as f:
            _state["doc"] = json.load(f)
    return _state["doc"]


def _validator(schema):
    """A 2020-12 validator resolving $refs inside the document: with the
    referencing library where jsonschema has it (4.18+), else RefResolver
    (Debian bookworm's 4.10)."""
    import jsonschema
    try:
        from referencing import Registry
        from referencing.jsonschema import DRAFT202012
    except ImportError:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            resolver = jsonschema.RefResolver(DOC_URI, document())
        return jsonschema.Draft202012Validator(schema, resolver=resolver)
    if "registry" not in _state:
        _state["registry"] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document()))
    return jsonschema.Draft202012Validator(schema, registry=_state["registry"])


def _templates():
    """[(regex, template)], literal templates before ones with parameters so
    /v1/runs/uploads wins over /v1/runs/{id}."""
    if "templates" not in _state:
        out = []
        for tpl in document()["paths"]:
            rx = ""
            for seg in tpl.strip("/").split("/"):
                m = re.fullmatch(r"\{(\w+)\}", seg)
                if m and m.group(1) == "rest" and tpl.endswith(seg):
                    rx += "/.+"
                elif m:
                    rx += "/[^/]+"
                else:
                    rx += "/" + re.escape(seg)
            # A template that ends in "/" (/ui/, the UI's page) is that path
            # alone: /ui is another route (its redirect).
            out.append((re.compile(rx + ("/" if tpl.endswith("/") else "/?")), tpl))
        out.sort(key=lambda t: (t[1].count("{"), -len(t[1])))
        _state["templates"] = out
    return _state["templates"]


def match_path(path):
    """The document's template for a request path (query dropped), or None."""
    path = urllib.parse.urlsplit(path).path
    for rx, tpl in _templates():
        if rx.fullmatch(path):
            return tpl
    return None


def _pointer(*parts):
    return "#/" + "/".join(urllib.parse.quote(str(p).replace("~", "~0").replace("/", "~1"), safe="")
                           for p in parts)


def validate(body, pointer):
    """Errors of body against the schema at pointer (a '#/...' into the document)."""
    # One validator per schema: its resolver keeps what it resolved.
    cache = _state.setdefault("validators", {})
    v = cache.get(pointer)
    if v is None:
        v = cache[pointer] = _validator({"$ref": DOC_URI + pointer})
    return sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))


def _resolve(obj, where):
    """Follow a $ref (a response object's) inside the document."""
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        node, where = document(), ref
        for part in ref.lstrip("#/").split("/"):
            node = node[urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")]
        obj = node
    return obj, where


def _describe(errors, body):
    lines = []
    for e in errors[:5]:
        # The innermost cause of a oneOf/anyOf says most.
        leaf = e
        while leaf.context:
            leaf = min(leaf.context, key=lambda c: len(c.absolute_path) * -1)
        path = "/" + "/".join(map(str, e.absolute_path))
        schema_path = "/".join(map(str, leaf.absolute_schema_path))
        lines.append("  at %s: %s\n    (schema %s: %s)" % (
            path, leaf.message[:400], schema_path, json.dumps(leaf.schema)[:300]))
    return "\n".join(lines) + "\n  body: " + json.dumps(body)[:1500]


def check_response(method, path, status, ctype, body, raw, streamed=False, headers=None):
    """Raise ContractError unless (method, path) -> status with this body is
    what docs/openapi.json says.  body: parsed JSON (or None); raw: bytes;
    streamed: the body was not read (an event stream, a download); headers:
    the answer's (lower-case names), or None not to check them."""
    doc = document()
    method = method.lower()
    route = "%s %s" % (method.upper(), urllib.parse.urlsplit(path).path)
    tpl = match_path(path)
    # docs/openapi.json's info: checks made on any path before routing.
    detail = str((body or {}).get("detail")) if isinstance(body, dict) else ""
    if status in (400, 414) and ctype == "application/problem+json" and (
            status == 414 or "control character" in detail or "contains a NUL character" in detail):
        _check_body(route, status, body, "#/components/schemas/ProblemDetails")
        return
    if tpl is None:
        # docs/openapi.json's info: an unknown path is 404 not_found.
        if status == 404 and ctype == "application/problem+json":
            _check_body(route, status, body, "#/components/schemas/ProblemDetails")
            return
        raise ContractError("%s -> %d: no path of docs/openapi.json matches %s" % (route, status, route))
    route = "%s %s" % (method.upper(), tpl)
    op = doc["paths"][tpl].get(method)
    if op is None:
        # ...and a known path answers 405 for a method it lacks.
        if status == 405 and ctype == "application/problem+json":
            _check_body(route, status, body, "#/components/schemas/ProblemDetails")
            return
        raise ContractError("%s -> %d: docs/openapi.json has no %s operation on %s"
                            % (route, status, method.upper(), tpl))
    responses = op.get("responses", {})
    key = str(status) if str(status) in responses else "%dXX" % (status // 100)
    if key not in responses:
        key = "default"
    if key not in responses:
        raise ContractError("%s -> %d: status %d is not documented (documented: %s)%s"
                            % (route, status, status, ", ".join(sorted(responses)),
                               "\n  body: " + json.dumps(body)[:1000] if body is not None else ""))
    resp, where = _resolve(responses[key], _pointer("paths", tpl, method, "responses", key))
    if headers is not None:
        _check_headers(route, status, resp, headers)
        if method == "options" and status == 204:
            _check_allow(route, path, headers)
    content = resp.get("content") or {}
    if not content:
        if raw and not streamed:
            raise ContractError("%s -> %d: the document's response has no content, but the body is %r"
                                % (route, status, raw[:300]))
        return
    if streamed and not ctype:
        return
    media = content.get(ctype)
    if media is None:
        wild = [k for k in content if k.endswith("/*") and ctype.startswith(k[:-1])] + \
               [k for k in content if k == "*/*"]
        media = content[wild[0]] if wild else None
    if media is None:
        raise ContractError("%s -> %d: content type %r is not documented (documented: %s)"
                            % (route, status, ctype, ", ".join(sorted(content))))
    if ctype in JSON_TYPES and not streamed and "schema" in media:
        base = where if where.startswith("#/components") else _pointer("paths", tpl, method, "responses", key)
        ctype_key = ctype if ctype in content else next(k for k in content if content[k] is media)
        _check_body(route, status, body, base + "/" + _pointer("content", ctype_key, "schema")[2:])


def _check_headers(route, status, resp, headers):
    for name, spec in (resp.get("headers") or {}).items():
        spec, _ = _resolve(spec, "")
        value = headers.get(name.lower())
        if value is None:
            if spec.get("required"):
                raise ContractError("%s -> %d: the answer lacks the %s header docs/openapi.json requires"
                                    % (route, status, name))
            continue
        errors = _validator(spec.get("schema", {})).iter_errors(value)
        for e in errors:
            raise ContractError("%s -> %d: header %s: %r: %s" % (route, status, name, value, e.message[:300]))


def _check_allow(route, path, headers):
    """OPTIONS tells the methods the path has: the document's, no more.  A
    path more than one template matches (/cells/C/v1/processes/config is
    also /processes/{id}) has the methods of each, as the router does."""
    path = urllib.parse.urlsplit(path).path
    tpls = [tpl for rx, tpl in _templates() if rx.fullmatch(path)]
    documented = {m.upper() for tpl in tpls for m in document()["paths"][tpl] if m in METHODS}
    allow = set((headers.get("allow") or "").split(","))
    if allow != documented:
        raise ContractError("%s -> 204: Allow says %s, docs/openapi.json's %s has %s"
                            % (route, ",".join(sorted(allow)), " and ".join(tpls), ",".join(sorted(documented))))


def _check_body(route, status, body, pointer):
    errors = validate(body, pointer)
    if errors:
        raise ContractError("%s -> %d: the body does not match docs/openapi.json's %s:\n%s"
                            % (route, status, urllib.parse.unquote(pointer), _describe(errors, body)))


def check_schema(body, schema):
    """body against components.schemas[schema] (for bodies a test parses
    itself: SSE events, NDJSON lines)."""
    errors = validate(body, _pointer("components", "schemas", schema))
    assert not errors, "%s does not match docs/openapi.json's %s:\n%s" % (
        json.dumps(body)[:500], schema, _describe(errors, body))
