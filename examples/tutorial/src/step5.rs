//! Step 5 — a web UI. The scheduler serves a status page of its own (how many copies run,
//! which, how often they were relaunched) and publishes its address as the framework's web UI
//! (`FrameworkInfo::webui_url`, Mesos's field): the master's web UI links to it from the
//! framework's entry, and `bramble frameworks` lists it.
//!
//! The scheduler is step 3's, wrapped: after each callback the wrapper publishes a
//! [`Status`] on a `watch` channel, and the page renders the latest one. The scheduler never
//! waits on the page, and the page never touches the scheduler's state.

use crate::step3;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use bramble_sdk::{async_trait, FrameworkId, Offer, Scheduler, SchedulerDriver, TaskStatus};
use tokio::sync::watch;

/// What the page shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub framework_id: Option<String>,
    pub instances: usize,
    pub running: Vec<String>,
    pub relaunches: u64,
}

/// Step 3's scheduler, publishing its [`Status`] after every callback.
pub struct WithStatusPage {
    pub inner: step3::HelloScheduler,
    status: watch::Sender<Status>,
}

impl WithStatusPage {
    /// The scheduler, and the receiving end for [`router`].
    pub fn new(inner: step3::HelloScheduler) -> (Self, watch::Receiver<Status>) {
        let (status, rx) = watch::channel(Status::default());
        let mut this = Self { inner, status };
        this.publish(None);
        (this, rx)
    }

    fn publish(&mut self, framework_id: Option<&FrameworkId>) {
        let inner = &self.inner;
        self.status.send_modify(|s| {
            if let Some(id) = framework_id {
                s.framework_id = Some(id.to_string());
            }
            s.instances = inner.instances;
            s.running = inner.running.iter().map(|id| id.to_string()).collect();
            s.relaunches = inner.relaunches;
        });
    }
}

#[async_trait]
impl Scheduler for WithStatusPage {
    async fn registered(&mut self, driver: &SchedulerDriver, id: &FrameworkId, again: bool) {
        self.inner.registered(driver, id, again).await;
        self.publish(Some(id));
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        self.inner.resource_offers(driver, offers).await;
        self.publish(None);
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        self.inner.status_update(driver, status).await;
        self.publish(None);
    }
}

/// The status page at `/`.
pub fn router(status: watch::Receiver<Status>) -> Router {
    Router::new().route(
        "/",
        get(move || {
            let page = render(&status.borrow());
            async move { Html(page) }
        }),
    )
}

/// Serves [`router`] on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: watch::Receiver<Status>,
) -> std::io::Result<()> {
    axum::serve(listener, router(status)).await
}

/// The page. Ids come from the master: escaped like anything else not written here.
pub fn render(s: &Status) -> String {
    let rows: String = s
        .running
        .iter()
        .map(|id| format!("<li><code>{}</code></li>", escape(id)))
        .collect();
    format!(
        "<!doctype html><title>hello-bramble</title><h1>hello-bramble</h1>\
         <p>framework <code>{}</code>: {} of {} copies running, {} relaunches</p><ul>{rows}</ul>",
        escape(s.framework_id.as_deref().unwrap_or("(not registered yet)")),
        s.running.len(),
        s.instances,
        s.relaunches,
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::testing::{offer, update, SchedulerTest};
    use bramble_sdk::{Resources, TaskState};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn fetch(addr: std::net::SocketAddr) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.expect("reply");
        reply
    }

    #[tokio::test]
    async fn the_page_follows_the_scheduler() {
        let (scheduler, status) = WithStatusPage::new(step3::HelloScheduler::new(2, None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, status));
        let mut t = SchedulerTest::new(scheduler);
        assert!(fetch(addr).await.contains("0 of 2 copies running"));
        t.register("fw-page").await;
        t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        let id = t.launched()[0].task_id.clone();
        t.update(update(id.as_str(), "a1", TaskState::Running))
            .await;
        let page = fetch(addr).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(
            page.contains("framework <code>fw-page</code>: 1 of 2 copies running"),
            "{page}"
        );
        assert!(page.contains(id.as_str()), "{page}");
        server.abort();
    }

    #[test]
    fn what_the_master_names_is_escaped() {
        let page = render(&Status {
            framework_id: Some("<script>alert(1)</script>".into()),
            instances: 1,
            running: vec!["a&b".into()],
            relaunches: 0,
        });
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;") && page.contains("a&amp;b"),
            "{page}"
        );
    }
}
