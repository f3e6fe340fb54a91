//! GraphiQL at `GET /graphql`, served wholly from the binary so it works
//! with no network beyond Herald itself.
//!
//! GraphiQL and React are the pinned npm builds vendored in
//! `assets/graphiql/` by `scripts/vendor-graphiql.sh`, whose manifest gives
//! each file's package and version. Assets are served under
//! `/graphiql/{package}@{version}/{file}` (Herald's own under a digest of
//! their content), so a URL never changes meaning and may be cached for a
//! year; the page itself is revalidated and allows content from its own
//! origin only.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::domain::sha256_hex::sha256_hex;

/// Where the assets are served.
pub const ASSETS_ROUTE: &str = "/graphiql/{*path}";

const MANIFEST: &str = include_str!("../../assets/graphiql/MANIFEST.tsv");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page's own scripts and styles come only from this origin. GraphiQL's
/// stylesheet embeds its fonts and a few images as `data:` URLs; `connect-src
/// 'self'` covers both `/graphql` and the `/graphql/ws` WebSocket.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    /// The path under `assets/graphiql/` (vendored) or a name (Herald's own).
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! vendored {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../assets/graphiql/", $name)),
        }
    };
}

/// In the order the page loads them: GraphiQL's UMD build needs the React
/// globals defined first.
static VENDORED: [Asset; 4] = [
    vendored!("react/react.production.min.js", JAVASCRIPT),
    vendored!("react-dom/react-dom.production.min.js", JAVASCRIPT),
    vendored!("graphiql/graphiql.min.js", JAVASCRIPT),
    vendored!("graphiql/graphiql.min.css", CSS),
];

static OWN: [Asset; 2] = [
    Asset {
        name: "start.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("graphiql/start.js"),
    },
    Asset {
        name: "style.css",
        content_type: CSS,
        bytes: include_bytes!("graphiql/style.css"),
    },
];

/// An asset and the path it is served at, below `/graphiql/`.
struct Served {
    path: String,
    asset: &'static Asset,
}

static SERVED: LazyLock<Vec<Served>> = LazyLock::new(|| {
    let vendored = VENDORED.iter().map(|asset| {
        let (package, version) = manifest_entry(asset.name);
        let file = asset.name.rsplit('/').next().unwrap_or(asset.name);
        Served {
            path: format!("{package}@{version}/{file}"),
            asset,
        }
    });
    let own = OWN.iter().map(|asset| Served {
        path: format!("herald-{}/{}", &sha256_hex(asset.bytes)[..16], asset.name),
        asset,
    });
    vendored.chain(own).collect()
});

/// The package and version the manifest records for a vendored file; the
/// manifest and the files are committed together, as a unit test checks.
fn manifest_entry(vendored: &str) -> (&'static str, &'static str) {
    manifest_rows()
        .find(|row| row.vendored == vendored)
        .map(|row| (row.package, row.version))
        .unwrap_or_else(|| panic!("assets/graphiql/MANIFEST.tsv lists {vendored}"))
}

struct ManifestRow {
    package: &'static str,
    version: &'static str,
    vendored: &'static str,
    #[cfg(test)]
    sha256: &'static str,
}

fn manifest_rows() -> impl Iterator<Item = ManifestRow> {
    MANIFEST.lines().skip(1).filter_map(|line| {
        let fields: Vec<&'static str> = line.split('\t').collect();
        match fields[..] {
            [package, version, _license, _source, vendored, _sha256] => Some(ManifestRow {
                package,
                version,
                vendored,
                #[cfg(test)]
                sha256: _sha256,
            }),
            _ => None,
        }
    })
}

fn url(name: &str) -> String {
    let served = SERVED
        .iter()
        .find(|served| served.asset.name == name)
        .expect("every page asset is served");
    format!("/graphiql/{}", served.path)
}

static PAGE: LazyLock<String> = LazyLock::new(|| {
    let stylesheets: String = ["graphiql/graphiql.min.css", "style.css"]
        .iter()
        .map(|name| format!("    <link rel=\"stylesheet\" href=\"{}\">\n", url(name)))
        .collect();
    let scripts: String = [
        "react/react.production.min.js",
        "react-dom/react-dom.production.min.js",
        "graphiql/graphiql.min.js",
        "start.js",
    ]
    .iter()
    .map(|name| format!("    <script src=\"{}\"></script>\n", url(name)))
    .collect();
    format!(
        "<!DOCTYPE html>
<html lang=\"en\">
  <head>
    <meta charset=\"utf-8\">
    <meta name=\"robots\" content=\"noindex\">
    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
    <title>Herald GraphiQL</title>
    <link rel=\"icon\" href=\"data:,\">
{stylesheets}  </head>
  <body>
    <main>
      <h1 class=\"visually-hidden\">Herald GraphiQL</h1>
      <div id=\"graphiql\">Loading GraphiQL…</div>
    </main>
{scripts}  </body>
</html>
"
    )
});

/// `GET /graphql`.
pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            // It names the current assets, so a browser asks again each time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        Html(PAGE.as_str()),
    )
        .into_response()
}

/// `GET /graphiql/{*path}`.
pub async fn asset(Path(path): Path<String>) -> Response {
    match SERVED.iter().find(|served| served.path == path) {
        Some(served) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(served.asset.content_type),
                ),
                // The path names the version (or digest), so it never changes.
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            served.asset.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_files_are_the_ones_the_manifest_records() {
        for asset in &VENDORED {
            let row = manifest_rows()
                .find(|row| row.vendored == asset.name)
                .unwrap_or_else(|| panic!("MANIFEST.tsv lists {}", asset.name));
            assert_eq!(
                sha256_hex(asset.bytes),
                row.sha256,
                "{} differs from its manifest entry: run scripts/vendor-graphiql.sh",
                asset.name
            );
        }
    }

    #[test]
    fn every_vendored_build_in_the_manifest_is_served_with_its_version() {
        for row in manifest_rows().filter(|row| !row.vendored.ends_with("LICENSE")) {
            let file = row.vendored.rsplit('/').next().unwrap();
            let path = format!("{}@{}/{file}", row.package, row.version);
            assert!(
                SERVED.iter().any(|served| served.path == path),
                "{path} is vendored but not served"
            );
        }
    }

    #[test]
    fn the_page_loads_nothing_from_another_origin() {
        let references: Vec<&str> = PAGE
            .split(['"', '\''])
            .filter(|part| part.starts_with('/') || part.contains("://"))
            .collect();
        assert_eq!(references.len(), 6, "{references:?}");
        for reference in references {
            let path = reference
                .strip_prefix("/graphiql/")
                .unwrap_or_else(|| panic!("{reference} is not one of Herald's assets"));
            assert!(SERVED.iter().any(|served| served.path == path), "{path}");
        }
    }
}
