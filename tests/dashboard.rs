//! The monitoring dashboard at `/`, loaded in headless Chromium (Debian's `chromium`): the page
//! is self-contained, shows the server's name, and its live counters move after traffic.
//!
//! `make test` installs Chromium and sets `NATTER_REQUIRE_CHROMIUM=1`, so there a missing
//! browser fails the test; a developer's `cargo test` without Chromium skips it, saying so.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| PathBuf::from("/usr/bin").join(name))
        .find(|p| p.exists())
}

/// The page's DOM after its scripts ran for a few (virtual) seconds.
fn render(browser: &PathBuf, url: &str) -> String {
    let profile = common::temp_dir();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=4000", "--dump-dom", url])
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("id=\"server-name\""),
        "no dashboard in the DOM:\n{dom}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The text of the element with `id`.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let from = start + dom[start..].find('>').unwrap() + 1;
    let to = from + dom[from..].find('<').unwrap();
    dom[from..to].to_string()
}

fn number(dom: &str, id: &str) -> u64 {
    let text = text_of(dom, id).replace(',', "");
    text.parse().unwrap_or_else(|_| panic!("#{id} is {text:?}"))
}

#[test]
fn dashboard_shows_the_server_and_live_counters_in_chromium() {
    if !common::is_natter() {
        return; // nats-server's `/` is its own page.
    }
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("NATTER_REQUIRE_CHROMIUM").is_none(),
            "Chromium is required (NATTER_REQUIRE_CHROMIUM) but not installed"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium; make test installs it)");
        return;
    };
    let server = Server::start_with(None, &["-m", "-1", "-n", "dash-board-1"]);
    let url = format!("http://{}/", server.monitor_addr());
    let mut c = server.quiet_client();
    c.send(b"SUB dash.> 1\r\n");
    for _ in 0..5 {
        c.send(b"PUB dash.in 2\r\nhi\r\n");
    }
    c.send(b"PING\r\n");
    let _ = c.msgs_until_pong();

    let dom = render(&browser, &url);
    assert_eq!(text_of(&dom, "server-name"), "dash-board-1");
    assert_eq!(number(&dom, "in-msgs"), 5);
    assert_eq!(number(&dom, "out-msgs"), 5);
    assert_eq!(number(&dom, "connections"), 1);
    assert!(
        dom.contains("<td>dash.&gt;</td>"),
        "the subscription's subject is listed:\n{dom}"
    );
    assert!(text_of(&dom, "status").contains("live"), "{dom}");
    assert!(
        !dom.contains("https://"),
        "the page loads nothing from elsewhere"
    );

    for _ in 0..20 {
        c.send(b"PUB dash.in 2\r\nhi\r\n");
    }
    c.send(b"PING\r\n");
    let _ = c.msgs_until_pong();
    let dom = render(&browser, &url);
    assert_eq!(number(&dom, "in-msgs"), 25, "the counters moved");
    assert_eq!(number(&dom, "out-msgs"), 25);
}
