//! The browser side, embedded in the binary: the JavaScript client
//! (`/client.js`, with its types at `/client.d.ts`) and the demo page at
//! `/` (`/demo.js`, `/style.css`).

use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

/// Path, content type, body.
const FILES: [(&str, &str, &str); 5] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "/client.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/client.js"),
    ),
    (
        "/client.d.ts",
        "application/typescript; charset=utf-8",
        include_str!("../web/client.d.ts"),
    ),
    (
        "/demo.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/demo.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

/// The routes serving the embedded files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            // Served from memory: always current after an upgrade.
                            (header::CACHE_CONTROL, "no-cache"),
                            // Pages of other sites may import the client.
                            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                        ],
                        body,
                    )
                }),
            )
        })
}

/// Lets pages of any origin read a response: the client reads `GET /nodes`
/// of whichever node it is connected to, which after a failover is not the
/// one that served the page.
pub(crate) async fn any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
