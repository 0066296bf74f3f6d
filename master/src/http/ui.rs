//! The web UI: one page, one script, one stylesheet, compiled into the binary with
//! `include_str!` so the master serves them with no files on disk and no network at run time.
//! The page reads everything from the JSON API and the event stream; it needs no token to load
//! (it holds no data) and asks for one when the API answers 401.

use super::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/ui/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'",
            ),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::APP_JS;

    /// The source of `app.js` from `start` up to and including the first `end` after it.
    fn js_between<'a>(start: &str, end: &str) -> &'a str {
        let from = APP_JS.find(start).expect("start marker in app.js");
        let len = APP_JS[from..].find(end).expect("end marker in app.js") + end.len();
        &APP_JS[from..from + len]
    }

    /// Runs the page's `esc` and the code between `start` and `end` in node, maps `function`
    /// over `inputs` there and returns what it made of each; `None` (after a SKIP line naming
    /// `test`) when there is no node.
    fn run_in_node(
        test: &str,
        (start, end): (&str, &str),
        function: &str,
        inputs: &impl serde::Serialize,
    ) -> Option<Vec<String>> {
        if std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("SKIP {test}: node not found");
            return None;
        }
        let script = format!(
            "{}\n{}\nconsole.log(JSON.stringify({}.map({function})));",
            js_between("const esc =", "}[c]));"),
            js_between(start, end),
            serde_json::to_string(inputs).expect("json"),
        );
        let out = std::process::Command::new("node")
            .arg("-e")
            .arg(&script)
            .output()
            .expect("running node");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(serde_json::from_slice(&out.stdout).expect("node's answer"))
    }

    /// Framework web UI URLs are the framework's word, so hostile: run the page's own
    /// `webuiLink` (with its `esc`) in node on a few and check what would reach the DOM.
    #[test]
    fn framework_web_ui_urls_become_links_only_when_http_and_are_always_escaped() {
        let cases = [
            "http://pi-a:31000/",
            "https://pi-b/ui?x=1&y=2",
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "https://x/\"><img src=x onerror=alert(1)>",
            "not a url <b>",
            "",
        ];
        let Some(html) = run_in_node(
            "framework_web_ui_urls_become_links_only_when_http",
            ("// webuiLink-begin", "// webuiLink-end"),
            "webuiLink",
            &cases,
        ) else {
            return;
        };
        assert_eq!(
            html[0],
            r#"<a class="mono" href="http://pi-a:31000/" target="_blank" rel="noopener noreferrer">http://pi-a:31000/</a>"#
        );
        assert!(
            html[1].starts_with(r#"<a class="mono" href="https://pi-b/ui?x=1&amp;y=2""#),
            "{}",
            html[1]
        );
        for (url, out) in cases.iter().zip(&html).skip(2) {
            let link = out.contains("<a");
            assert_eq!(link, url.starts_with("https://x/"), "{url:?} → {out}");
            for tag in ["<img", "<script", "<b>", "\"><"] {
                assert!(!out.contains(tag), "{url:?} → {out}");
            }
        }
        assert!(html[2].contains("javascript:alert(1)"), "shown as text");
        assert_eq!(html[7], "", "no URL, nothing shown");
    }

    /// A drained agent gets a chip: "draining" while anything is allocated there, "drained"
    /// once nothing is; an agent not drained gets none. Run in node from the page's own code.
    #[test]
    fn drained_agents_get_a_draining_or_drained_chip() {
        let agent = |draining: bool, cpus_milli: u64| {
            serde_json::json!({
                "hostname": "pi-a",
                "draining": draining,
                "allocated": { "cpus_milli": cpus_milli, "mem_mib": 0 },
            })
        };
        let agents = [agent(false, 500), agent(true, 500), agent(true, 0)];
        let Some(html) = run_in_node(
            "drained_agents_get_a_draining_or_drained_chip",
            ("function drain(a) {", "\n}\n"),
            "drain",
            &agents,
        ) else {
            return;
        };
        assert_eq!(html[0], "", "not drained: no chip");
        assert!(html[1].contains(r#"data-drain="draining""#), "{}", html[1]);
        assert!(html[1].contains(">draining</span>"), "{}", html[1]);
        assert!(html[2].contains(r#"data-drain="drained""#), "{}", html[2]);
        assert!(html[2].contains(">drained</span>"), "{}", html[2]);
    }
}
