//! The API's OpenAPI 3.1 document, served at `/api/openapi.json`.

use serde_json::{Value, json};

fn op(summary: &str, body: Option<&str>, response: &str) -> Value {
    let mut op = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "409": {"$ref": "#/components/responses/Error"},
        }
    });
    if let Some(body) = body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
    }
    op
}

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

/// The access review endpoints (a document of their own: one `json!` for everything is past
/// the macro's recursion limit).
fn review_paths(with_id: impl Fn(Value) -> Value) -> Value {
    json!({
            "/api/reviews": {
                "get": op("Access review campaigns the caller may see, with progress (no items)", None, "CampaignList"),
                "post": op("Start a campaign (admins): its population frozen from a fresh sync", Some("NewCampaign"), "Campaign")
            },
            "/api/reviews/mine": {"get": op("The caller's undecided items, by campaign", None, "CampaignList")},
            "/api/reviews/{id}": {"get": with_id(op("A campaign with its items (the caller's, unless an admin or auditor)", None, "Campaign"))},
            "/api/reviews/{id}/decisions": {"post": with_id(op("Keep or revoke items, each with a reason (required to revoke)", Some("Decisions"), "ItemList"))},
            "/api/reviews/{id}/close": {"post": with_id(op("Close (admins): every item decided and every revocation verified, or past due", None, "Campaign"))},
            "/api/reviews/{id}/export": {"get": {
                "summary": "The evidence files (admins and auditors): report.html, items.csv, items.json, manifest.json",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["html", "csv", "json", "all"]}}
                ],
                "responses": {"200": {"description": "file name → content", "content": {"application/json": {"schema": {"type": "object", "required": ["files"], "properties": {"files": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
                              "403": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}
            }}
    })
}

fn review_schemas() -> Value {
    json!({
                "NewCampaign": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"},
                    "scopes": {"type": "array", "items": {"type": "string"}, "description": "group:NAME, roles, critical:NAME, keys, entitlement:NAME"},
                    "scope": {"type": "string"},
                    "due": {"type": "string", "description": "from now, e.g. 14d"},
                    "reviewer": {"type": "string", "description": "a login or group:NAME, for people without a manager"},
                    "on_due": {"type": "string", "enum": ["keep", "revoke"]},
                    "keep_reason_required": {"type": "boolean"}
                }},
                "Decisions": {"type": "object", "additionalProperties": false, "properties": {
                    "decisions": {"type": "array", "items": {"type": "object", "required": ["item", "decision"], "properties": {
                        "item": {"type": "string"}, "decision": {"type": "string", "enum": ["keep", "revoke"]}, "reason": {"type": "string"}}}},
                    "items": {"type": "array", "items": {"type": "string"}, "description": "with one decision and reason for all"},
                    "decision": {"type": "string", "enum": ["keep", "revoke"]},
                    "reason": {"type": "string"}
                }},
                "Item": {"type": "object", "required": ["id", "subject", "access", "reviewer", "decision", "reason", "decided_by", "decided_at", "revocation_verified_at"], "properties": {
                    "id": {"type": "string"}, "subject": {"type": "string"}, "kind": {"type": "string", "enum": ["group", "role", "rule", "key", "entitlement"]},
                    "target": {"type": "string"}, "access": {"type": "string"}, "reviewer": {"type": "string"}, "revocation": {"type": "string"},
                    "protected": {"type": "string"},
                    "decision": {"type": ["string", "null"], "enum": ["keep", "revoke", null]}, "reason": {"type": ["string", "null"]},
                    "decided_by": {"type": ["string", "null"]}, "decided_at": {"type": ["string", "null"], "format": "date-time"},
                    "revocation_verified_at": {"type": ["string", "null"], "format": "date-time"}, "revocation_error": {"type": ["string", "null"]}
                }},
                "ItemList": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}}},
                "Campaign": {"type": "object", "required": ["id", "name", "scopes", "state", "created_by", "created_at", "due_at", "on_due", "items", "progress"], "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
                    "state": {"type": "string", "enum": ["open", "closed"]}, "created_by": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"}, "due_at": {"type": "string", "format": "date-time"},
                    "on_due": {"type": "string", "enum": ["keep", "revoke"]}, "close_note": {"type": ["string", "null"]},
                    "generated": {"type": "object"}, "progress": {"type": "object"}, "reviewers": {"type": "array", "items": {"type": "object"}},
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}
                }},
                "CampaignList": {"type": "object", "required": ["campaigns"], "properties": {"campaigns": {"type": "array", "items": {"type": "object"}}}}
    })
}

pub fn document() -> Value {
    let mut create = op("Request an entitlement", Some("NewRequest"), "Request");
    create["responses"]["201"] = create["responses"]["200"].clone();
    if let Some(r) = create["responses"].as_object_mut() {
        r.remove("200");
    }
    let list = {
        let mut o = op("List requests", None, "RequestList");
        o["parameters"] = json!([
            {"name": "mine", "in": "query", "schema": {"type": "boolean"}, "description": "only the caller's requests"},
            {"name": "review", "in": "query", "schema": {"type": "boolean"}, "description": "only pending requests the caller may review"},
            {"name": "state", "in": "query", "schema": {"type": "string"}, "description": "comma-separated states"},
            {"name": "entitlement", "in": "query", "schema": {"type": "string"}},
            {"name": "requester", "in": "query", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer"}}
        ]);
        o
    };
    let mut preview = op(
        "What requesting it would give the caller: devices, what it gives, approvals, presets, an active grant already held",
        None,
        "Preview",
    );
    preview["parameters"] = json!([
        {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "device", "in": "query", "schema": {"type": "string"}, "description": "posture and tag grants: the device it is for"}
    ]);
    let mut access = op(
        "Who has access right now: active grants, managed groups' members and why, overdue removals (admins and auditors)",
        None,
        "Access",
    );
    access["parameters"] = json!([
        {"name": "entitlement", "in": "query", "schema": {"type": "string"}},
        {"name": "requester", "in": "query", "schema": {"type": "string"}},
        {"name": "group", "in": "query", "schema": {"type": "string"}}
    ]);
    let with_id = |mut o: Value| {
        o["parameters"] = id_param();
        o
    };
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "tidegate API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Just-in-time access for Tailscale tailnets. Authenticate with `Authorization: Bearer <token>` (`tidegate token create`)."},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: the database answers and its migrations are applied", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, with the reason"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text format)", "responses": {"200": {"description": "metrics"}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI document"}}}},
            "/api/whoami": {"get": op("Who the token belongs to", None, "WhoAmI")},
            "/api/entitlements": {"get": op("Entitlements the caller may request", None, "EntitlementList")},
            "/api/entitlements/{name}/preview": {"get": preview},
            "/api/access": {"get": access},
            "/api/break-glass": {"get": op("Break-glass grants, unreviewed first (admins and auditors)", None, "RequestList")},
            "/api/requests/{id}/break-glass-review": {"post": with_id(op("Mark a break-glass grant reviewed, with a note (admins and auditors)", Some("Note"), "Request"))},
            "/api/requests": {"get": list, "post": create},
            "/api/requests/{id}": {"get": with_id(op("One request", None, "Request"))},
            "/api/requests/{id}/approve": {"post": with_id(op("Approve (a request or its pending extension)", Some("Comment"), "Request"))},
            "/api/requests/{id}/deny": {"post": with_id(op("Deny", Some("Comment"), "Request"))},
            "/api/requests/{id}/cancel": {"post": with_id(op("Withdraw a request not yet active", None, "Request"))},
            "/api/requests/{id}/revoke": {"post": with_id(op("End access early (a drop when the requester does it)", Some("Comment"), "Request"))},
            "/api/requests/{id}/extend": {"post": with_id(op("Ask for more time (needs approval)", Some("Extend"), "Request"))},
            "/api/requests/{id}/key": {"post": with_id(op("Claim the auth key of an approved authkey request; shown once", None, "ClaimedKey"))},
            "/api/audit": {"get": {
                "summary": "The hash-chained audit log (admins)",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}}
                ],
                "responses": {"200": {"description": "entries", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditList"}}}},
                              "403": {"$ref": "#/components/responses/Error"}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "WhoAmI": {"type": "object", "required": ["login", "admin"], "properties": {"login": {"type": "string"}, "admin": {"type": "boolean"}}},
                "EntitlementList": {"type": "object", "required": ["entitlements"], "properties": {"entitlements": {"type": "array", "items": {"type": "object"}}}},
                "NewRequest": {"type": "object", "required": ["entitlement"], "additionalProperties": false, "properties": {
                    "entitlement": {"type": "string"},
                    "reason": {"type": "string"},
                    "duration": {"type": "string", "description": "90s, 15m, 2h, 1d"},
                    "start_at": {"type": "string", "format": "date-time"},
                    "devices": {"type": "array", "items": {"type": "string"}, "description": "posture entitlements: the requester's own devices"},
                    "break_glass": {"type": "boolean"}
                }},
                "Note": {"type": "object", "required": ["note"], "additionalProperties": false, "properties": {"note": {"type": "string"}}},
                "Preview": {"type": "object", "required": ["entitlement", "gives", "approvals", "auto_approved", "duration_presets"], "properties": {
                    "entitlement": {"type": "string"}, "gives": {"type": "array", "items": {"type": "string"}},
                    "devices": {"type": "array", "items": {"type": "object"}}, "for_devices": {"type": "array", "items": {"type": "string"}},
                    "approvals": {"type": "integer"}, "auto_approved": {"type": "boolean"},
                    "duration_presets": {"type": "array", "items": {"type": "string"}},
                    "holding": {"type": "object"}
                }},
                "Access": {"type": "object", "required": ["active", "groups", "overdue"], "properties": {
                    "active": {"type": "array", "items": {"$ref": "#/components/schemas/Request"}},
                    "overdue": {"type": "array", "items": {"$ref": "#/components/schemas/Request"}},
                    "groups": {"type": "array", "items": {"type": "object", "properties": {
                        "group": {"type": "string"}, "entitlements": {"type": "array", "items": {"type": "string"}},
                        "members": {"type": "array", "items": {"type": "object", "properties": {
                            "login": {"type": "string"}, "because": {"type": "string", "enum": ["grant", "standing", "unexplained"]},
                            "requests": {"type": "array", "items": {"type": "string"}}, "until": {"type": "string", "format": "date-time"}}}}}}}
                }},
                "Comment": {"type": "object", "additionalProperties": false, "properties": {"comment": {"type": "string"}, "reason": {"type": "string"}}},
                "Extend": {"type": "object", "required": ["duration"], "additionalProperties": false, "properties": {"duration": {"type": "string"}, "reason": {"type": "string"}}},
                "Request": {"type": "object", "required": ["id", "state", "entitlement", "requester", "reason", "duration", "created_at"], "properties": {
                    "id": {"type": "string"},
                    "state": {"type": "string", "enum": ["pending", "approved", "active", "expired", "revoked", "denied", "cancelled", "failed"]},
                    "entitlement": {"type": "string"},
                    "requester": {"type": "string"},
                    "reason": {"type": "string"},
                    "duration": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "activated_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "reviews": {"type": "array", "items": {"type": "object"}},
                    "overdue": {"type": "boolean"}
                }},
                "RequestList": {"type": "object", "required": ["requests"], "properties": {"requests": {"type": "array", "items": {"$ref": "#/components/schemas/Request"}}}},
                "ClaimedKey": {"type": "object", "required": ["request", "key"], "properties": {"request": {"$ref": "#/components/schemas/Request"}, "key": {"type": "string"}}},
                "AuditList": {"type": "object", "required": ["entries"], "properties": {"entries": {"type": "array", "items": {"type": "object"}}}}
            }
        }
    });
    if let (Some(paths), Value::Object(more)) =
        (doc["paths"].as_object_mut(), review_paths(with_id))
    {
        paths.extend(more);
    }
    if let (Some(schemas), Value::Object(more)) = (
        doc["components"]["schemas"].as_object_mut(),
        review_schemas(),
    ) {
        schemas.extend(more);
    }
    doc
}
