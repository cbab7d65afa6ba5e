//! The documentation the binary serves without a key: the OpenAPI document
//! at `/api/v1/openapi.json`, and at `/docs` a reference page that renders
//! it. Every asset of the page is compiled in and inlined into one HTML
//! answer, so it works on a closed network with nothing else to fetch.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{openapi, AppState};

/// The OpenAPI document's route: under `/api/v1`, so the panel reaches it
/// too. Its path and method are the ones its `#[utoipa::path]` declares.
pub fn document_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_openapi))
}

/// The reference page's route, outside `/api/v1`.
pub fn page_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_docs))
}

const PAGE: &str = include_str!("../../assets/docs/index.html");
const STYLE: &str = include_str!("../../assets/docs/docs.css");
const SCRIPT: &str = include_str!("../../assets/docs/docs.js");

/// The page with its style and script inlined, built once.
fn page() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| {
        PAGE.replace("/*@STYLE@*/", STYLE)
            .replace("/*@SCRIPT@*/", SCRIPT)
    })
}

fn with_type(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "Operations",
    operation_id = "getOpenApi",
    summary = "OpenAPI Document",
    description = "This document (OpenAPI 3.1). Needs no key and costs no quota; generate a client from it.",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object),
    )
)]
pub async fn get_openapi() -> Response {
    with_type(openapi::document(), "application/json")
}

#[utoipa::path(
    get,
    path = "/docs",
    tag = "Operations",
    operation_id = "getDocs",
    summary = "Documentation Page",
    description = "A readable reference of this API with a form to try calls with a test key. Self-contained: it loads nothing from the network.",
    security(()),
    responses(
        (status = 200, description = "The HTML page.", content_type = "text/html", body = String),
    )
)]
pub async fn get_docs() -> Response {
    let mut response = with_type(page(), "text/html; charset=utf-8");
    // The page's script and style are inline; nothing else may load.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
        ),
    );
    response
}
