"""OpenAPI 3.1 description of every HTTP endpoint (kept true by tests/web/test_openapi.py)."""

from __future__ import annotations

from typing import Any

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


_TOKEN_REQUEST = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {
            "type": "string",
            "enum": ["refresh_token", "client_credentials"],
            "description": "RFC 6749 §6 / §4.4",
        },
        "refresh_token": {"type": "string", "description": "Required for refresh_token."},
        "scope": {
            "type": "string",
            "description": "Space-delimited; on refresh it may only narrow the granted scope.",
        },
        "client_id": {"type": "string", "description": "client_secret_post or public clients."},
        "client_secret": {"type": "string", "description": "client_secret_post."},
    },
    "additionalProperties": {"type": "string"},
}

_TOKEN_OPERATION = {
    "summary": "Token endpoint (RFC 6749 §3.2)",
    "operationId": "token",
    "security": [{"clientBasic": []}, {}],
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _TOKEN_REQUEST},
            "application/json": {"schema": _TOKEN_REQUEST},
        },
    },
    "responses": {
        "200": {
            "description": "Tokens issued (RFC 6749 §5.1).",
            "headers": _NO_STORE_HEADERS,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TokenResponse"}}
            },
        },
        "400": _error("RFC 6749 §5.2 error."),
        "401": _error(
            "invalid_client.",
            {"WWW-Authenticate": {"schema": {"type": "string"}}},
        ),
        "413": _error("Body larger than the server accepts."),
        "500": _error("server_error."),
        "503": _error("temporarily_unavailable; retry."),
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
                    "summary": "Liveness and readiness (the database is reachable)",
                    "operationId": "healthz",
                    "responses": {
                        "200": {
                            "description": "Healthy.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                        "503": {
                            "description": "The database is unreachable.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
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
                }
            },
            "schemas": {
                "TokenResponse": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in", "scope"],
                    "properties": {
                        "access_token": {"type": "string", "description": "RFC 9068 JWT"},
                        "token_type": {"type": "string", "enum": ["Bearer"]},
                        "expires_in": {"type": "integer", "minimum": 1},
                        "refresh_token": {"type": "string", "pattern": "^tkd_rt_[0-9A-Za-z]{49}$"},
                        "scope": {"type": "string"},
                        "id_token": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string", "enum": _ERROR_CODES},
                        "error_description": {"type": "string"},
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
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "unavailable"]},
                        "database": {"type": "string"},
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
