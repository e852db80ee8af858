//! Headless Chromium for the browser tests, driven over WebDriver
//! (chromedriver) with fantoccini.
//!
//! chromedriver, and the Chromium it starts, run in the test's own network
//! namespace (see `common::netns`): they reach the gateways of the test's
//! private LAN and nothing else. Each page is a browser of its own (one
//! WebDriver session, a fresh profile directory), so pages share no
//! cookies and none is a background tab.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{timeout_at, Instant};

use crate::common::DEADLINE;

const HOW_TO_INSTALL: &str = "the browser tests need Chromium and its WebDriver: \
on Debian or Ubuntu run `apt-get install chromium chromium-driver` (as .ci/run does)";

/// The port chromedriver listens on, on the namespace's loopback.
const DRIVER_PORT: u16 = 9515;

/// Finds a program on the PATH.
fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Where screenshots go: `target/browser/`.
pub(crate) fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("browser");
    std::fs::create_dir_all(&dir).expect("create target/browser");
    dir
}

/// chromedriver, started in the calling thread's network namespace.
pub(crate) struct Chrome {
    driver: Child,
    chromium: PathBuf,
    profiles: PathBuf,
}

impl Chrome {
    /// Starts chromedriver; panics with how to install it if Chromium or
    /// chromedriver is missing.
    pub(crate) async fn start() -> Chrome {
        let chromium = find("chromium")
            .or_else(|| find("chromium-browser"))
            .unwrap_or_else(|| panic!("no `chromium` on the PATH; {HOW_TO_INSTALL}"));
        let driver = find("chromedriver")
            .unwrap_or_else(|| panic!("no `chromedriver` on the PATH; {HOW_TO_INSTALL}"));
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let profiles = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "chrome-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profiles);
        std::fs::create_dir_all(&profiles).expect("profile dir");
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={DRIVER_PORT}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}; {HOW_TO_INSTALL}"));
        let mut out = BufReader::new(driver.stdout.take().expect("stdout")).lines();
        let end = Instant::now() + DEADLINE;
        loop {
            let line = timeout_at(end, out.next_line())
                .await
                .expect("chromedriver did not start in time")
                .expect("read chromedriver's output")
                .expect("chromedriver exited");
            if line.contains("started successfully") {
                break;
            }
        }
        // Keep reading so chromedriver never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        Chrome {
            driver,
            chromium,
            profiles,
        }
    }

    /// A new browser showing `url`.
    pub(crate) async fn page(&self, name: &str, url: &str) -> Page {
        let profile = self.profiles.join(name);
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
            .await
            .unwrap_or_else(|e| panic!("a Chromium session: {e}; {HOW_TO_INSTALL}"));
        client.goto(url).await.expect("load the page");
        Page {
            name: name.to_string(),
            client,
        }
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

impl Drop for Chrome {
    /// Ends the browsers too, even those of a test that panicked before
    /// closing its pages: each browser is a child of chromedriver, and its
    /// helper processes end with it.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            for child in children(pid) {
                // SAFETY: a plain syscall on a process this test started.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
        }
        let _ = self.driver.start_kill();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// One page in a browser of its own.
pub(crate) struct Page {
    pub name: String,
    pub client: Client,
}

impl Page {
    /// Runs `script` (a function body; a returned Promise is awaited).
    pub(crate) async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{script}", self.name))
    }

    /// Polls the JavaScript expression `expr` until it is truthy; returns
    /// its value. Panics at the deadline with `what` and the page's text.
    pub(crate) async fn wait(&self, what: &str, expr: &str) -> Value {
        let script = format!("return ({expr}) || null;");
        let end = Instant::now() + DEADLINE;
        loop {
            let v = self.js(&script).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if Instant::now() > end {
                let text = self.js("return document.body.innerText").await;
                self.screenshot(&format!("timeout-{}", what.replace(' ', "-")))
                    .await;
                panic!(
                    "{}: timed out waiting for {what} ({expr}); the page shows:\n{}",
                    self.name,
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the first element matching `css` ("" if none).
    pub(crate) async fn text(&self, css: &str) -> String {
        let css = serde_json::to_string(css).expect("a string");
        self.js(&format!(
            "return document.querySelector({css})?.textContent ?? ''"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Types `text` into the input `input` and clicks `button`.
    pub(crate) async fn submit(&self, input: &str, text: &str, button: &str) {
        let field = self
            .client
            .find(Locator::Css(input))
            .await
            .unwrap_or_else(|e| panic!("{}: no {input}: {e}", self.name));
        field.send_keys(text).await.expect("type");
        self.click(button).await;
    }

    /// Clicks the first element matching `css`.
    pub(crate) async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name))
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: click {css}: {e}", self.name));
    }

    /// Saves a screenshot as `target/browser/<name>-<page>.png`.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{name}-{}.png", self.name));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the browser.
    pub(crate) async fn close(self) {
        let _ = self.client.close().await;
    }
}
