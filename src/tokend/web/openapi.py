"""OpenAPI 3.1 description of every HTTP endpoint (kept true by tests/web/test_openapi.py
and by the schema-driven fuzz of tests/fuzz/test_schema.py).

The request schemas are exact: what they admit is what the server's parsers admit (a
fuzzer that generates requests from them gets past input parsing to the real checks), and
what they exclude the server refuses. Hence: every parameter is text of RFC 6749 Appendix
A's UNICODECHARNOCRLF (``_TEXT``: no control character but TAB), an empty value is an
omitted one (so a required parameter has ``minLength: 1``), a body has at most 64
parameters, and the token request is one schema per grant type. Unknown parameters are
allowed (RFC 6749 §3.2: "The authorization server MUST ignore unrecognized request
parameters"; RFC 7009 §2.1, RFC 7662 §2.1 alike), as text. What a schema cannot say
(which client is registered, whether a token is valid) is the server's to answer with an
error of the documented shape.

Why one long file: it is a declarative table (one dict per operation and schema, no logic
beyond a few builders), read top to bottom beside RFC 6749/7009/7662/8414 and the pages;
splitting it by endpoint would scatter the shared parameter types it defines once.
"""

from __future__ import annotations

from typing import Any

# RFC 6749 Appendix A, UNICODECHARNOCRLF: %x09 / %x20-7E / %x80-D7FF / %xE000-FFFD /
# %x10000-10FFFF, i.e. no control character but TAB and no U+FFFE/U+FFFF (web/parsing.py).
_TEXT = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f\\ufffe\\uffff]*$"
_MAX_PARAMETERS = 64  # web/parsing.py MAX_FIELDS
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), space-delimited.
_SCOPE_CHARS = "\\x21\\x23-\\x5b\\x5d-\\x7e"
_SCOPE = f"^[{_SCOPE_CHARS} ]*$"
# RFC 7515 §7.1 compact serialization (a DPoP proof, RFC 9449 §4.2).
_COMPACT_JWS = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"


def _text(description: str | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "pattern": _TEXT, **extra}
    if description:
        schema["description"] = description
    return schema


def _required_text(description: str | None = None, **extra: Any) -> dict[str, Any]:
    """A required parameter: an empty value is an omitted one (RFC 6749 §3.1)."""
    return _text(description, minLength=1, **extra)


def _params(
    properties: dict[str, Any], required: list[str], *, json: bool, **extra: Any
) -> dict[str, Any]:
    """A body of single-valued text parameters (web/parsing.py), as a form or a JSON
    object. In JSON an optional member may be null (an omitted parameter)."""
    if json:
        properties = {
            name: prop if name in required else {"oneOf": [prop, {"type": "null"}]}
            for name, prop in properties.items()
        }
    extra_value: dict[str, Any] = _text()
    if json:
        extra_value = {"oneOf": [extra_value, {"type": "null"}]}
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "propertyNames": {"pattern": _TEXT},
        "additionalProperties": extra_value,
        "maxProperties": _MAX_PARAMETERS,
        **extra,
    }


_ERROR_CODES = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "not_found",
    "invalid_token",
    "insufficient_scope",
    "invalid_dpop_proof",
    "use_dpop_nonce",
    "authorization_pending",
    "slow_down",
    "access_denied",
    "expired_token",
]

_NO_STORE_HEADERS = {
    "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
    "Pragma": {"schema": {"type": "string", "const": "no-cache"}},
}


def _error(description: str, extra_headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {**_NO_STORE_HEADERS, **(extra_headers or {})},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_BEARER_CHALLENGE = {
    "description": "The Bearer challenge (RFC 6750 §3).",
    "schema": {"type": "string", "pattern": "^Bearer"},
}

# RFC 9110 §10.2.3 (RFC 6585 §4): delay-seconds.
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until a new attempt may be made.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _throttled() -> dict[str, Any]:
    """RFC 6585 §4: failed client authentications from this address (for this client or
    any) passed the limit; nothing is checked until Retry-After has passed."""
    return {
        "description": "Too many failed client authentications (RFC 6585 §4); retry after "
        "Retry-After seconds. Successful authentication is never throttled.",
        "headers": {**_NO_STORE_HEADERS, **_RETRY_AFTER},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ThrottleError"}}},
    }


_CLIENT_PARAMS = {
    "client_id": _text(
        "client_secret_post or public clients; with Basic authentication, absent or the "
        "Basic client_id."
    ),
    "client_secret": _text("client_secret_post; never with Basic authentication (RFC 6749 §2.3)."),
}
_SCOPE_PARAM = {
    "type": "string",
    "pattern": _SCOPE,
    "description": "Space-delimited scope tokens (RFC 6749 §3.3); on refresh it may only "
    "narrow the granted scope.",
}


def _token_request(json: bool) -> dict[str, Any]:
    """RFC 6749 §4.1.3 / §6 / §4.4: one schema per grant type."""

    def grant(
        name: str, description: str, props: dict[str, Any], required: list[str]
    ) -> dict[str, Any]:
        return _params(
            {
                "grant_type": {"type": "string", "const": name, "description": description},
                **props,
                **_CLIENT_PARAMS,
            },
            ["grant_type", *required],
            json=json,
            title=name,
        )

    return {
        "oneOf": [
            grant(
                "authorization_code",
                "RFC 6749 §4.1.3",
                {
                    "code": _required_text("The authorization code."),
                    "redirect_uri": _required_text("As in the authorization request."),
                    "code_verifier": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9._~-]{43,128}$",
                        "description": "PKCE (RFC 7636 §4.1); required when the request "
                        "had a code_challenge.",
                    },
                },
                ["code", "redirect_uri"],
            ),
            grant(
                "refresh_token",
                "RFC 6749 §6",
                {"refresh_token": _required_text("The refresh token."), "scope": _SCOPE_PARAM},
                ["refresh_token"],
            ),
            grant(
                "client_credentials",
                "RFC 6749 §4.4 (confidential clients)",
                {"scope": _SCOPE_PARAM},
                [],
            ),
            grant(
                "urn:ietf:params:oauth:grant-type:device_code",
                "RFC 8628 §3.4: poll with the device code of /auth/v2/device/authorize, no "
                "sooner than its interval (slow_down adds 5 s to it); authorization_pending "
                "until the user decides, then the tokens (once), access_denied or "
                "expired_token.",
                {
                    "device_code": {
                        "type": "string",
                        "pattern": "^tkd_dc_[0-9A-Za-z]{49}$",
                        "description": "The device code (RFC 8628 §3.2).",
                    }
                },
                ["device_code"],
            ),
        ]
    }


# RFC 9449: the DPoP proof a request may carry, and the nonce a server may hand out.
_DPOP_PARAMETER = {
    "name": "DPoP",
    "in": "header",
    "required": False,
    "description": "A DPoP proof JWT (RFC 9449 §4): typ dpop+jwt, ES256, RS256 or EdDSA, "
    "with htm, htu (this endpoint's URI under the issuer), iat (within the proof window), "
    "a unique jti, and the server's nonce (DPoP-Nonce) when it requires one: at the token "
    "endpoint of the clients registered with dpop_nonce_required, or of every client with "
    "TOKEND_DPOP_NONCE=on; at UserInfo with TOKEND_DPOP_NONCE=on. At the token endpoint it "
    "binds the access token to the key (token_type DPoP, cnf.jkt) and, for a public client, "
    "the refresh tokens of the grant; a refresh of a bound grant needs a proof of its key.",
    "schema": {"type": "string", "pattern": _COMPACT_JWS, "maxLength": 8192},
}
_NONCE_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}
_TOKEN_DPOP_NONCE = {
    "DPoP-Nonce": {
        "description": "RFC 9449 §8: the current server nonce, sent on every answer to a "
        "request with a DPoP header. A client whose proofs need a nonce (use_dpop_nonce) puts "
        "it in its next proof; one that does not may ignore it. A nonce is good for 5 to 10 "
        "minutes, on every process of the server.",
        "required": False,
        "schema": _NONCE_SCHEMA,
    }
}
_RESOURCE_DPOP_NONCE = {
    "DPoP-Nonce": {
        "description": "RFC 9449 §9: the nonce to put in the next DPoP proof; sent on "
        "answers to DPoP requests when the server requires nonces (TOKEND_DPOP_NONCE=on).",
        "required": False,
        "schema": _NONCE_SCHEMA,
    }
}

_TOKEN_OPERATION = {
    "summary": "Token endpoint (RFC 6749 §3.2)",
    "operationId": "token",
    "security": [{"clientBasic": []}, {}],
    "parameters": [_DPOP_PARAMETER],
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _token_request(json=False)},
            "application/json": {"schema": _token_request(json=True)},
        },
    },
    "responses": {
        "200": {
            "description": "Tokens issued (RFC 6749 §5.1).",
            "headers": {**_NO_STORE_HEADERS, **_TOKEN_DPOP_NONCE},
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TokenResponse"}}
            },
        },
        "400": _error(
            "RFC 6749 §5.2 error; invalid_dpop_proof (RFC 9449 §5), or use_dpop_nonce (§8): "
            "the client's proofs must carry a server nonce and this one had none, or a stale "
            "one; nothing changed, retry with a new proof carrying the DPoP-Nonce header's "
            "value. Client authentication and the grant type are checked before the nonce.",
            _TOKEN_DPOP_NONCE,
        ),
        "401": _error(
            "invalid_client.",
            {"WWW-Authenticate": {"schema": {"type": "string"}}, **_TOKEN_DPOP_NONCE},
        ),
        "413": _error("Body larger than the server accepts.", _TOKEN_DPOP_NONCE),
        "429": _throttled(),
        "500": _error("server_error."),
        "503": _error("temporarily_unavailable; retry.", _TOKEN_DPOP_NONCE),
    },
}


def openapi_document(issuer: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tokend",
            "version": "1",
            "description": "OpenID Connect / OAuth 2.0 token service (Didit Sign-in API shapes).",
        },
        "servers": [{"url": issuer}],
        "paths": {
            **PAGE_PATHS,
            "/auth/v2/token": {"post": _TOKEN_OPERATION},
            "/auth/v2/token/": {"post": {**_TOKEN_OPERATION, "operationId": "tokenSlash"}},
            "/auth/jwks": {
                "get": {
                    "summary": "JSON Web Key Set (RFC 7517): current and recently retired keys",
                    "operationId": "jwks",
                    "responses": {
                        "200": {
                            "description": "The key set.",
                            "content": {
                                "application/jwk-set+json": {
                                    "schema": {"$ref": "#/components/schemas/JWKS"}
                                }
                            },
                        }
                    },
                }
            },
            "/auth/v2/revoke": {"post": _REVOCATION_OPERATION},
            "/auth/v2/introspect": {"post": _INTROSPECTION_OPERATION},
            "/auth/v2/device/authorize": {"post": _DEVICE_AUTHORIZATION_OPERATION},
            "/auth/v2/users/retrieve": {
                "get": {**_USERINFO_OPERATION, "operationId": "userinfo"},
                "post": {
                    **_USERINFO_OPERATION,
                    "operationId": "userinfoPost",
                    "requestBody": _USERINFO_FORM,
                    "responses": {
                        **_USERINFO_OPERATION["responses"],
                        "413": _bearer_error("Body larger than the server accepts."),
                    },
                },
            },
            "/.well-known/openid-configuration": {
                "get": {
                    "summary": "OpenID Provider metadata",
                    "operationId": "openidConfiguration",
                    "responses": {"200": _metadata_response()},
                }
            },
            "/.well-known/oauth-authorization-server": {
                "get": {
                    "summary": "RFC 8414 authorization server metadata",
                    "operationId": "oauthAuthorizationServer",
                    "responses": {"200": _metadata_response()},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics, summed over every worker of the server",
                    "description": "The Prometheus text format (0.0.4). With "
                    "TOKEND_METRICS_TOKEN set, only with that bearer token.",
                    "operationId": "metrics",
                    "security": [{}, {"metricsToken": []}],
                    "responses": {
                        "200": {
                            "description": "Every metric (tokend.metrics lists them).",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error(
                            "TOKEND_METRICS_TOKEN is set and the request does not carry it.",
                            {"WWW-Authenticate": _BEARER_CHALLENGE},
                        ),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Readiness: the database is reachable and the signing keys "
                    "are loaded (a Kubernetes readiness probe)",
                    "operationId": "healthz",
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                        "503": {
                            "description": "Not ready: the body says what is wrong.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                    },
                }
            },
            "/healthz/live": {
                "get": {
                    "summary": "Liveness: the process answers (no database is involved; "
                    "a Kubernetes liveness probe)",
                    "operationId": "healthzLive",
                    "responses": {
                        "200": {
                            "description": "Alive.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"const": "ok"}},
                                        "additionalProperties": False,
                                    }
                                }
                            },
                        },
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "client_id:client_secret, form-urlencoded (RFC 6749 §2.3.1)",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "TOKEND_METRICS_TOKEN, when set (GET /metrics only).",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token of this server (RFC 6750, RFC 9068).",
                },
                "dpop": {
                    "type": "http",
                    "scheme": "dpop",
                    "bearerFormat": "JWT",
                    "description": "A DPoP-bound access token (RFC 9449 §7): "
                    "Authorization: DPoP <token>, with a DPoP proof header carrying ath.",
                },
            },
            "schemas": {
                "TokenResponse": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in", "scope"],
                    "properties": {
                        "access_token": {"type": "string", "description": "RFC 9068 JWT"},
                        "token_type": {
                            "type": "string",
                            "enum": ["Bearer", "DPoP"],
                            "description": "DPoP when the request carried a DPoP proof.",
                        },
                        "expires_in": {"type": "integer", "minimum": 1},
                        "refresh_token": {"type": "string", "pattern": "^tkd_rt_[0-9A-Za-z]{49}$"},
                        "scope": {"type": "string"},
                        "id_token": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "error_description"],
                    "properties": {
                        "error": {"type": "string", "enum": _ERROR_CODES},
                        "error_description": {"type": "string", "minLength": 1},
                    },
                    "additionalProperties": False,
                },
                "ThrottleError": {
                    "type": "object",
                    "description": "Too many failed authentications: the shape of Error.",
                    "required": ["error", "error_description"],
                    "properties": {
                        "error": {"type": "string", "pattern": "^[a-z_]+$"},
                        "error_description": {"type": "string", "minLength": 1},
                    },
                    "additionalProperties": False,
                },
                "JWKS": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {
                        "keys": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["kty", "kid", "alg", "use"],
                                "properties": {
                                    "kty": {"type": "string", "enum": ["RSA", "EC", "OKP"]},
                                    "kid": {"type": "string"},
                                    "alg": {"type": "string", "enum": ["RS256", "ES256", "EdDSA"]},
                                    "use": {"const": "sig"},
                                },
                            },
                        }
                    },
                },
                "Metadata": {
                    "type": "object",
                    "required": [
                        "issuer",
                        "token_endpoint",
                        "jwks_uri",
                        "response_types_supported",
                        "subject_types_supported",
                        "id_token_signing_alg_values_supported",
                    ],
                    "properties": {
                        "issuer": {"type": "string", "format": "uri"},
                        "token_endpoint": {"type": "string", "format": "uri"},
                        "jwks_uri": {"type": "string", "format": "uri"},
                    },
                },
                "UserInfo": _USERINFO_SCHEMA,
                "Introspection": _INTROSPECTION_SCHEMA,
                "DeviceAuthorization": _DEVICE_AUTHORIZATION_SCHEMA,
                "Health": {
                    "type": "object",
                    "required": ["status", "database", "keys"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "unavailable"]},
                        "database": {"type": "string", "enum": ["ok", "unreachable"]},
                        "keys": {"type": "string", "enum": ["ok", "missing"]},
                    },
                },
            },
        },
    }


def _metadata_response() -> dict[str, Any]:
    return {
        "description": "Metadata document.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Metadata"}}},
    }


# -- UserInfo (web/userinfo.py, core/userinfo.py) ------------------------------------------


def _bearer_error(description: str) -> dict[str, Any]:
    """An error with the RFC 6750 §3 challenge (RFC 9449 §7.1's for the DPoP scheme)."""
    challenge = {"schema": {"type": "string", "pattern": "^(Bearer|DPoP)( |$)"}}
    return _error(description, {"WWW-Authenticate": challenge, **_RESOURCE_DPOP_NONCE})


def _verified_value(value: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [value, "is_verified", "is_primary"],
        "properties": {
            value: {"type": "string"},
            "is_verified": {"type": "boolean"},
            "is_primary": {"type": "boolean"},
        },
        "additionalProperties": False,
    }


_USERINFO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Didit's objects and the standard claims (OIDC Core §5.4) by granted scope; "
    "unknown values are left out, never null.",
    "required": ["sub"],
    "properties": {
        "sub": {"type": "string", "description": "Public or pairwise (OIDC Core §8)."},
        "names": {
            "type": "object",
            "description": "Scope names or profile.",
            "required": ["full_name", "is_verified"],
            "properties": {
                "first_name": {"type": "string"},
                "family_name": {"type": "string"},
                "full_name": {"type": "string"},
                "is_verified": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "given_name": {"type": "string"},
        "family_name": {"type": "string"},
        "name": {"type": "string"},
        "picture": {"type": "string", "format": "uri", "description": "Scope picture or profile."},
        "email": {**_verified_value("email"), "description": "Scope email."},
        "email_verified": {"type": "boolean"},
        "phone": {**_verified_value("phone_number"), "description": "Scope phone."},
        "phone_number": {"type": "string"},
        "phone_number_verified": {"type": "boolean"},
    },
    "additionalProperties": False,
}

_USERINFO_OPERATION: dict[str, Any] = {
    "summary": "UserInfo (OIDC Core §5.3): the signed-in user's claims, by the token's scope",
    "security": [{"bearer": []}, {"dpop": []}],
    "parameters": [
        {
            **_DPOP_PARAMETER,
            "description": "With Authorization: DPoP, the proof (RFC 9449 §7): as at the "
            "token endpoint, plus ath, the hash of the access token, and made with the key "
            "the token is bound to (cnf.jkt). Not read with the Bearer scheme.",
        }
    ],
    "responses": {
        "200": {
            "description": "The claims.",
            "headers": _NO_STORE_HEADERS,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UserInfo"}}},
        },
        "400": _bearer_error("invalid_request: the token in the query string or sent twice."),
        "401": _bearer_error(
            "invalid_token (no error attribute in the challenge when no token was sent); "
            "invalid_dpop_proof or use_dpop_nonce with the DPoP scheme (RFC 9449 §7.1, §9)."
        ),
        "403": _bearer_error('insufficient_scope: the token lacks "openid".'),
        "500": _error("server_error."),
        "503": _error("temporarily_unavailable; retry."),
    },
}

_USERINFO_FORM = {
    "required": False,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": _params(
                {
                    "access_token": _required_text(
                        "RFC 6750 §2.2, instead of the Authorization header (never both)."
                    )
                },
                [],
                json=False,
            )
        }
    },
}


# -- Revocation (RFC 7009) and introspection (RFC 7662): web/revocation.py, web/introspection.py


def _token_form(description: str) -> dict[str, Any]:
    def schema(json: bool) -> dict[str, Any]:
        return _params(
            {
                "token": _required_text(description),
                "token_type_hint": _text(
                    "Optional: refresh_token or access_token. Never needed (the two formats "
                    "differ) and unknown values are ignored (RFC 7009 §2.1)."
                ),
                **_CLIENT_PARAMS,
            },
            ["token"],
            json=json,
        )

    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": schema(json=False)},
            "application/json": {"schema": schema(json=True)},
        },
    }


def _client_auth_errors() -> dict[str, Any]:
    return {
        "400": _error("invalid_request: no token, a repeated parameter, a malformed body."),
        "401": _error(
            "invalid_client.",
            {"WWW-Authenticate": {"schema": {"type": "string", "pattern": "^Basic "}}},
        ),
        "413": _error("Body larger than the server accepts."),
        "429": _throttled(),
        "500": _error("server_error."),
        "503": _error("temporarily_unavailable; retry."),
    }


_REVOCATION_OPERATION: dict[str, Any] = {
    "summary": "Token revocation (RFC 7009)",
    "description": "A refresh token ends its whole family and the access tokens issued from "
    "it; an access token is deny-listed until it expires. Client authentication as at the "
    "token endpoint (public clients: client_id alone). A client can only revoke its own "
    "tokens; unknown, malformed, expired, already revoked and other clients' tokens get the "
    "same empty 200.",
    "operationId": "revoke",
    "security": [{"clientBasic": []}, {}],
    "requestBody": _token_form("The refresh token or access token to revoke."),
    "responses": {
        "200": {"description": "Done (empty body, RFC 7009 §2.2).", "headers": _NO_STORE_HEADERS},
        **_client_auth_errors(),
    },
}

_INTROSPECTION_OPERATION: dict[str, Any] = {
    "summary": "Token introspection (RFC 7662)",
    "description": "For confidential clients (resource servers), about any token of this "
    "server, whichever client it was issued to. Public clients get invalid_client.",
    "operationId": "introspect",
    "security": [{"clientBasic": []}, {}],
    "requestBody": _token_form("The access token or refresh token to introspect."),
    "responses": {
        "200": {
            "description": "The token's state (RFC 7662 §2.2).",
            "headers": _NO_STORE_HEADERS,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Introspection"}}
            },
        },
        **_client_auth_errors(),
    },
}


def _scope_form() -> dict[str, Any]:
    def schema(json: bool) -> dict[str, Any]:
        scope = {**_SCOPE_PARAM, "description": "Space-delimited scope tokens (RFC 6749 "
                 "§3.3) within the client's registered scope; absent: all of it."}  # fmt: skip
        return _params({"scope": scope, **_CLIENT_PARAMS}, [], json=json)

    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": schema(json=False)},
            "application/json": {"schema": schema(json=True)},
        },
    }


_DEVICE_AUTHORIZATION_OPERATION: dict[str, Any] = {
    "summary": "Device authorization request (RFC 8628 §3.1)",
    "description": "For clients registered with the grant type "
    "urn:ietf:params:oauth:grant-type:device_code (others get unauthorized_client). Client "
    "authentication as at the token endpoint (public clients: client_id alone), under the "
    "same abuse limits. The device shows user_code and verification_uri (or a QR code of "
    "verification_uri_complete), then polls the token endpoint with device_code.",
    "operationId": "deviceAuthorization",
    "security": [{"clientBasic": []}, {}],
    "requestBody": _scope_form(),
    "responses": {
        "200": {
            "description": "RFC 8628 §3.2.",
            "headers": _NO_STORE_HEADERS,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/DeviceAuthorization"}}
            },
        },
        **{
            **_client_auth_errors(),
            "400": _error(
                "invalid_request (a repeated parameter, a malformed body), invalid_scope, "
                "unauthorized_client."
            ),
        },
    },
}

_DEVICE_AUTHORIZATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    ],
    "additionalProperties": False,
    "properties": {
        "device_code": {"type": "string", "pattern": "^tkd_dc_[0-9A-Za-z]{49}$"},
        "user_code": {
            "type": "string",
            "pattern": "^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$",
            "description": "For the person to type at verification_uri (any case, dash optional).",
        },
        "verification_uri": {"type": "string", "format": "uri"},
        "verification_uri_complete": {"type": "string", "format": "uri"},
        "expires_in": {"type": "integer", "minimum": 1},
        "interval": {"type": "integer", "minimum": 1},
    },
}

_INTROSPECTION_SCHEMA: dict[str, Any] = {
    "description": "RFC 7662 §2.2: {active: false} alone for any token that is not active.",
    "oneOf": [
        {
            "type": "object",
            "required": ["active"],
            "properties": {"active": {"const": False}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["active", "iss", "sub", "client_id", "scope", "exp", "iat", "token_type"],
            "properties": {
                "active": {"const": True},
                "iss": {"type": "string", "format": "uri"},
                "sub": {"type": "string"},
                "aud": {"type": "string", "description": "Access tokens."},
                "client_id": {"type": "string"},
                "scope": {"type": "string"},
                "exp": {"type": "integer"},
                "iat": {"type": "integer"},
                "auth_time": {"type": "integer", "description": "Access tokens of a user."},
                "jti": {"type": "string", "description": "Access tokens."},
                "sid": {"type": "string", "description": "The token family (grant)."},
                "token_type": {"type": "string", "enum": ["Bearer", "DPoP", "refresh_token"]},
                "cnf": {
                    "type": "object",
                    "description": "RFC 7800 / RFC 9449 §6: the key the token is bound to.",
                    "properties": {"jkt": {"type": "string"}},
                },
            },
            "additionalProperties": False,
        },
    ],
}


_PROMPT_VALUE = "(login|consent|select_account)"
_AUTHORIZE_PARAMS: list[tuple[str, bool, dict[str, Any]]] = [
    ("response_type", True, {"type": "string", "enum": ["code"]}),
    ("client_id", True, _required_text()),
    ("redirect_uri", True, _required_text("Exactly as registered (RFC 9700 §4.1.3).")),
    (
        "scope",
        True,
        {
            "type": "string",
            "pattern": f"^ *([{_SCOPE_CHARS}]+ +)*openid( +[{_SCOPE_CHARS}]+)* *$",
            "description": "Must include openid, and only scopes the client is registered for.",
        },
    ),
    ("state", False, _text()),
    ("nonce", False, _text(maxLength=512)),
    (
        "code_challenge",
        False,
        {
            "type": "string",
            "pattern": "^[A-Za-z0-9._~-]{43,128}$",
            "description": "PKCE (RFC 7636 §4.2); required of public clients.",
        },
    ),
    (
        "code_challenge_method",
        False,
        {"type": "string", "enum": ["S256"], "description": "With code_challenge only."},
    ),
    (
        "prompt",
        False,
        {
            "type": "string",
            "pattern": f"^ *(none|{_PROMPT_VALUE}( +{_PROMPT_VALUE})*) *$",
            "description": "OIDC Core §3.1.2.1; none stands alone.",
        },
    ),
    ("max_age", False, {"type": "string", "pattern": "^[0-9]{1,10}$"}),
    ("login_hint", False, _text("OIDC Core §3.1.2.1; not used.")),
]


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _redirect(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string", "format": "uri-reference"}}},
    }


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A page's form: the CSRF token of the page that showed it (with its cookie), and
    text parameters as at the API endpoints."""
    csrf = _required_text("The token of the form's page (signed double-submit cookie).")
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": _params(
                    {"csrf_token": csrf, **properties}, ["csrf_token", *required], json=False
                )
            }
        },
    }


PAGE_PATHS: dict[str, Any] = {
    "/auth/v2/authorize": {
        "get": {
            "summary": "Authorization endpoint (OIDC Core §3.1.2, RFC 6749 §4.1, PKCE S256)",
            "operationId": "authorize",
            "description": "Every parameter at most once (RFC 6749 §3.1), an empty one counting "
            "as omitted; unknown ones are ignored. An unknown client_id or an unregistered "
            "redirect_uri is answered on tokend's own page (400), never redirected; any other "
            "error goes back to the redirect URI (302 with error, error_description, state and "
            "iss). Public clients must send code_challenge.",
            "parameters": [
                {"name": name, "in": "query", "required": required, "schema": schema}
                for name, required, schema in _AUTHORIZE_PARAMS
            ],
            "responses": {
                "200": _html("The sign-in or consent page."),
                "302": _redirect("Back to the redirect URI with code+state+iss, or an error."),
                "400": _html("Unknown client or unregistered redirect URI: never redirected."),
            },
        }
    },
    "/auth/v2/authorize/login": {
        "post": {
            "summary": "Sign in (username + password), then continue the authorization",
            "operationId": "login",
            "requestBody": _form(
                {
                    "username": _required_text(),
                    "password": _required_text(),
                    "next": _required_text(
                        "Where to go once signed in: /account or an authorization request.",
                        pattern="^(/account|/auth/v2/authorize\\?[^\\x00-\\x08\\x0a-\\x1f\\x7f"
                        "\\ufffe\\uffff]*)$",
                    ),
                },
                ["username", "password", "next"],
            ),
            "responses": {
                "303": _redirect("Signed in: on to the authorization request or /account."),
                "400": _html(
                    "Wrong username or password (one generic message), or an authorization "
                    "request in next that is no longer valid."
                ),
                "403": _html("Missing or wrong CSRF token, or a cross-origin POST."),
                "429": {
                    **_html(
                        "Too many failed sign-ins from this address (for this account or "
                        "any); the password is not checked until Retry-After has passed."
                    ),
                    "headers": _RETRY_AFTER,
                },
            },
        }
    },
    "/auth/v2/authorize/consent": {
        "post": {
            "summary": "Allow or deny the client the requested scopes",
            "operationId": "consent",
            "requestBody": _form(
                {
                    "request": _required_text("The authorization query."),
                    "decision": {"type": "string", "enum": ["allow", "deny"]},
                },
                ["request", "decision"],
            ),
            "responses": {
                "303": _redirect("Back to the client with a code, or error=access_denied."),
                "200": _html("The sign-in page, when the session has ended."),
                "400": _html("The carried authorization request is no longer valid."),
                "403": _html("Missing or wrong CSRF token, or a cross-origin POST."),
            },
        }
    },
    "/account": {
        "get": {
            "summary": "The signed-in user's active sessions (one per token family)",
            "operationId": "account",
            "responses": {"200": _html("The account page, or the sign-in page.")},
        }
    },
    "/account/revoke": {
        "post": {
            "summary": "Revoke one of the user's token families at once",
            "operationId": "accountRevoke",
            "requestBody": _form({"family_id": _required_text()}, ["family_id"]),
            "responses": {
                "303": _redirect("Back to /account."),
                "403": _html("Missing or wrong CSRF token."),
            },
        }
    },
    "/account/logout": {
        "post": {
            "summary": "End the browser session",
            "operationId": "logout",
            "requestBody": _form({}, []),
            "responses": {
                "303": _redirect("Back to /account."),
                "403": _html("Missing or wrong CSRF token."),
            },
        }
    },
    "/account/consents/withdraw": {
        "post": {
            "summary": "Withdraw a remembered consent (and revoke that client's families)",
            "operationId": "accountWithdrawConsent",
            "requestBody": _form({"client_id": _required_text()}, ["client_id"]),
            "responses": {
                "303": _redirect("Back to /account."),
                "403": _html("Missing or wrong CSRF token."),
            },
        }
    },
    "/account/logout/everywhere": {
        "post": {
            "summary": "End every browser session of the signed-in user",
            "operationId": "logoutEverywhere",
            "requestBody": _form({}, []),
            "responses": {
                "303": _redirect("Back to /account."),
                "403": _html("Missing or wrong CSRF token."),
            },
        }
    },
    "/auth/static/tokend.css": {
        "get": {
            "summary": "The pages' stylesheet",
            "operationId": "stylesheet",
            "responses": {
                "200": {
                    "description": "CSS",
                    "content": {"text/css": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}
