//! The panel's files, compiled in: nothing is read from disk at run time,
//! so the binary serves the same panel wherever it runs, offline too.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Path under `/panel/assets/` (or `index.html`), content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", HTML, include_bytes!("../../panel/index.html")),
    ("app.js", JS, include_bytes!("../../panel/app.js")),
    ("api.js", JS, include_bytes!("../../panel/api.js")),
    ("ui.js", JS, include_bytes!("../../panel/ui.js")),
    ("services.js", JS, include_bytes!("../../panel/services.js")),
    ("service.js", JS, include_bytes!("../../panel/service.js")),
    ("charts.js", JS, include_bytes!("../../panel/charts.js")),
    ("console.js", JS, include_bytes!("../../panel/console.js")),
    ("account.js", JS, include_bytes!("../../panel/account.js")),
    ("buy.js", JS, include_bytes!("../../panel/buy.js")),
    ("webhooks.js", JS, include_bytes!("../../panel/webhooks.js")),
    ("audit.js", JS, include_bytes!("../../panel/audit.js")),
    ("panel.css", CSS, include_bytes!("../../panel/panel.css")),
    (
        "vendor/xterm/xterm.mjs",
        JS,
        include_bytes!("../../panel/vendor/xterm/xterm.mjs"),
    ),
    (
        "vendor/xterm/xterm.css",
        CSS,
        include_bytes!("../../panel/vendor/xterm/xterm.css"),
    ),
    (
        "vendor/addon-fit/addon-fit.mjs",
        JS,
        include_bytes!("../../panel/vendor/addon-fit/addon-fit.mjs"),
    ),
    (
        "vendor/uplot/uPlot.esm.js",
        JS,
        include_bytes!("../../panel/vendor/uplot/uPlot.esm.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        CSS,
        include_bytes!("../../panel/vendor/uplot/uPlot.min.css"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The response for one file, or `None` when there is no such file.
pub fn response(path: &str) -> Option<Response> {
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let mut response = (StatusCode::OK, *body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_content_type_by_its_extension() {
        for (path, content_type, body) in ASSETS {
            assert!(!body.is_empty(), "{path} is empty");
            let expected = match path.rsplit('.').next() {
                Some("html") => HTML,
                Some("js" | "mjs") => JS,
                Some("css") => CSS,
                _ => panic!("{path}: unknown kind of file"),
            };
            assert_eq!(*content_type, expected, "{path}");
        }
    }
}
