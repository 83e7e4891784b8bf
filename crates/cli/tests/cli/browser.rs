//! The web UI in a real browser: headless Chromium from Debian, driven over WebDriver
//! (`chromedriver`) with fantoccini. Fields are found through their labels and buttons by their
//! names, as a screen reader would; the request and the approval are completed with the
//! keyboard alone. Every page visited is scanned with axe-core (from npm, `tests/browser`) and
//! must have no serious or critical violation; on a 390 px phone every page must stay one
//! header line high and never scroll sideways; no page's HTML is over 20 KB. Screenshots go to
//! `target/browser-screenshots/` as test artefacts, and the per-page figures to
//! `target/browser-screenshots/pages.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{Demo, free_port, prod_access_members, repo, wait_until};

/// `chromedriver` on PATH; the test fails without it in CI and is skipped elsewhere.
fn chromedriver() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromedriver"))
            .find(|p| p.exists())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("chromedriver is not installed (apt-get install chromium chromium-driver)")
        }
        None => {
            eprintln!("skipped: chromedriver is not installed");
            None
        }
    }
}

/// axe-core's script (scripts/test.sh runs `npm ci` in tests/browser); required in CI.
fn axe_source() -> Option<String> {
    let path = repo().join("tests/browser/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!(
                "{} is missing: run `npm ci` in tests/browser",
                path.display()
            )
        }
        Err(_) => {
            eprintln!("skipped: run `npm ci` in tests/browser for the browser suite");
            None
        }
    }
}

fn chromium() -> &'static str {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/usr/bin/chromium")
}

fn screenshots() -> PathBuf {
    let dir = repo().join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver, and the runtime fantoccini's futures run on (the tests themselves stay
/// synchronous, so the blocking helpers of the other tests work between browser steps).
struct Driver {
    process: Child,
    url: String,
    rt: tokio::runtime::Runtime,
    axe: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Viewport {
    Laptop,
    Phone,
    /// A laptop whose system asks for dark mode.
    Dark,
}

impl Viewport {
    fn name(self) -> &'static str {
        match self {
            Viewport::Laptop => "laptop",
            Viewport::Phone => "phone",
            Viewport::Dark => "dark",
        }
    }
}

/// What the suite measured on one page.
#[derive(Default)]
struct PageFigures {
    bytes: u64,
    violations: BTreeMap<String, u64>,
}

impl Driver {
    fn start(path: &PathBuf, axe: String) -> Driver {
        let port = free_port();
        let process = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", || {
            crate::http_get(&format!("{url}/status")).is_some()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Driver {
            process,
            url,
            rt,
            axe,
        }
    }

    fn browser(&self, server: &str, viewport: Viewport) -> Browser<'_> {
        let (width, height) = match viewport {
            Viewport::Laptop | Viewport::Dark => (1280, 900),
            Viewport::Phone => (390, 844),
        };
        let mut options = json!({
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
        });
        if viewport == Viewport::Dark
            && let Some(args) = options["args"].as_array_mut()
        {
            args.push(json!("--force-dark-mode"));
        }
        if viewport == Viewport::Phone {
            options["mobileEmulation"] = json!({"deviceMetrics": {
                "width": width, "height": height, "pixelRatio": 3.0, "touch": true,
            }});
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = self
            .rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&self.url),
            )
            .unwrap();
        Browser {
            driver: self,
            client: Some(client),
            server: server.to_owned(),
            viewport,
            figures: BTreeMap::new(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

struct Browser<'a> {
    driver: &'a Driver,
    client: Option<Client>,
    server: String,
    viewport: Viewport,
    figures: BTreeMap<String, PageFigures>,
}

impl Browser<'_> {
    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.driver.rt.block_on(f)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn open(&self, path: &str) {
        self.run(self.client().goto(&format!("{}{path}", self.server)))
            .unwrap();
    }

    fn source(&self) -> String {
        self.run(self.client().source()).unwrap()
    }

    fn url(&self) -> String {
        self.run(self.client().current_url()).unwrap().to_string()
    }

    fn script(&self, script: &str) -> Value {
        self.run(self.client().execute(script, Vec::new())).unwrap()
    }

    fn find_all(&self, xpath: &str) -> Vec<Element> {
        self.run(self.client().find_all(Locator::XPath(xpath)))
            .unwrap_or_default()
    }

    fn find(&self, xpath: &str) -> Element {
        // Right after a click the old page may still be going away: look again.
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_all(xpath).into_iter().next() {
                return e;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nothing matches {xpath} on {}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The form field whose `<label>` reads `label`.
    fn field(&self, label: &str) -> Element {
        let started = Instant::now();
        loop {
            let l = self.find(&format!("//label[normalize-space()='{label}']"));
            if let Ok(Some(id)) = self.run(l.attr("for")) {
                return self.find(&format!("//*[@id='{id}']"));
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "label {label} names no field"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn button(&self, name: &str) -> Element {
        self.find(&format!("//button[normalize-space()='{name}']"))
    }

    fn click(&self, e: &Element) {
        self.run(e.click()).unwrap();
    }

    fn type_into(&self, e: &Element, text: &str) {
        self.run(e.clear()).unwrap();
        self.run(e.send_keys(text)).unwrap();
    }

    fn choose(&self, select: &Element, label: &str) {
        self.run(select.select_by_label(label)).unwrap();
    }

    /// Presses Tab until the focused element satisfies `is_it` (its id, or a button's text).
    fn tab_to(&self, what: &str) -> Element {
        let tab = char::from(fantoccini::key::Key::Tab).to_string();
        for _ in 0..80 {
            let active = self.run(self.client().active_element()).unwrap();
            let id = self.run(active.attr("id")).unwrap().unwrap_or_default();
            let text = self.run(active.text()).unwrap_or_default();
            if id == what || text.trim() == what {
                return active;
            }
            self.run(active.send_keys(&tab)).unwrap();
        }
        panic!("Tab never reached {what} on {}", self.url());
    }

    fn press_enter(&self, e: &Element) {
        let enter = char::from(fantoccini::key::Key::Enter).to_string();
        self.run(e.send_keys(&enter)).unwrap();
    }

    /// Waits until the page's URL satisfies `done` (a click's navigation may still be going).
    fn wait_for_url(&self, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.url();
            if done(&url) {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "stuck at {url}:\n{}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reloads `path` until its page contains `text`.
    fn wait_for_text(&self, path: &str, text: &str) {
        let started = Instant::now();
        loop {
            self.open(path);
            if self.source().contains(text) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{text:?} never appeared on {path}:\n{}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The flash message after an action.
    fn status_message(&self) -> String {
        let e = self.find("//*[@role='status']");
        self.run(e.text()).unwrap()
    }

    fn sign_in(&self, login: &str) {
        self.open("/");
        assert!(self.url().contains("/login"));
        let user = self.field("User");
        self.choose(&user, login);
        self.click(&self.button("Sign in"));
        self.wait_for_url(|u| !u.contains("/login"));
    }

    /// Checks the page as it stands and keeps a screenshot: axe-core finds no serious or
    /// critical violation, the HTML is at most 20 KB, and on a phone the header is one line
    /// and nothing scrolls sideways.
    /// axe-core's violations on the page as it stands (injected afresh: navigation drops it).
    fn axe(&self) -> Vec<Value> {
        let injected = self.run(self.client().execute(
            &format!("{}\nreturn typeof axe;", self.driver.axe),
            Vec::new(),
        ));
        assert_eq!(
            injected.unwrap(),
            json!("object"),
            "axe-core loads on {}",
            self.url()
        );
        let found = self
            .run(self.client().execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {resultTypes: ['violations']})\
                   .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,\
                       nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))))\
                   .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
                Vec::new(),
            ))
            .unwrap();
        found.as_array().cloned().unwrap_or_default()
    }

    fn check(&mut self, name: &str) {
        let page = self.url();
        let violations = self.axe();
        let bad: Vec<&Value> = violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            bad.is_empty(),
            "accessibility ({}) on {page}: {}",
            self.viewport.name(),
            serde_json::to_string_pretty(&bad).unwrap()
        );
        let mut figures = PageFigures::default();
        for v in &violations {
            *figures
                .violations
                .entry(v["impact"].as_str().unwrap_or("unknown").to_owned())
                .or_default() += 1;
        }
        figures.bytes = self
            .script("return performance.getEntriesByType('navigation')[0].decodedBodySize;")
            .as_u64()
            .unwrap_or(0);
        assert!(
            figures.bytes <= 20 * 1024,
            "{page} is {} bytes of HTML",
            figures.bytes
        );
        if self.viewport == Viewport::Phone {
            let layout = self.script(
                "const centres = [...document.querySelectorAll('header a')].map(a => {\
                   const r = a.getBoundingClientRect(); return r.top + r.height / 2; });\
                 return [document.documentElement.scrollWidth, window.innerWidth,\
                         Math.max(...centres) - Math.min(...centres)];",
            );
            let (scroll, width, spread) = (
                layout[0].as_f64().unwrap(),
                layout[1].as_f64().unwrap(),
                layout[2].as_f64().unwrap(),
            );
            assert_eq!(width, 390.0, "a phone's viewport");
            assert!(
                scroll <= width,
                "{page} scrolls sideways on a phone: {scroll} > {width}"
            );
            assert!(
                spread < 8.0,
                "{page}: the header wraps on a phone ({spread} px between its links)"
            );
        }
        let png = self.run(self.client().screenshot()).unwrap();
        std::fs::write(
            screenshots().join(format!("{}-{name}.png", self.viewport.name())),
            png,
        )
        .unwrap();
        self.figures
            .insert(format!("{} {name}", self.viewport.name()), figures);
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.driver.rt.block_on(client.close());
        }
    }
}

fn id_of(url: &str) -> String {
    let path = url.split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_owned()
}

/// Every flow of the web UI, on a laptop, then every page on a phone.
#[test]
fn every_flow_in_chromium_on_a_laptop_and_a_phone() {
    let (Some(path), Some(axe)) = (chromedriver(), axe_source()) else {
        return;
    };
    let started = Instant::now();
    let demo = Demo::start();
    let driver = Driver::start(&path, axe);
    let mut report: BTreeMap<String, PageFigures> = BTreeMap::new();

    // Dave, new: an empty state that leads somewhere.
    let mut dave = driver.browser(&demo.server, Viewport::Laptop);
    dave.sign_in("dave@example.com");
    assert!(dave.source().contains("You hold no access right now"));
    dave.check("my-access-empty");
    // The scanner itself finds what it should (an image without a text alternative).
    dave.script("document.body.insertAdjacentHTML('beforeend', '<img src=\"/static/favicon.svg\">'); return 1;");
    assert!(
        dave.axe().iter().any(|v| v["id"] == "image-alt"),
        "axe-core reports problems"
    );

    // He asks for production SSH with the keyboard alone.
    dave.open("/request?entitlement=prod-ssh");
    let page = dave.source();
    assert!(
        page.contains("What it gives") && page.contains("TCP 22, 5432 to"),
        "{page}"
    );
    assert!(page.contains("1 approval from group:sre"), "{page}");
    dave.check("request-form");
    let reason = dave.tab_to("reason");
    dave.run(reason.send_keys("INC-4211 disk full on db-1"))
        .unwrap();
    let request = dave.tab_to("Request");
    dave.press_enter(&request);
    let url = dave.wait_for_url(|u| u.contains("/requests/"));
    let ssh = id_of(&url);
    assert_eq!(
        dave.status_message(),
        "Request sent. Approvers have been asked."
    );
    assert!(dave.source().contains("prod-ssh for dave@example.com"));
    dave.check("request-pending");

    // A duration chip, a bad duration kept in the form with the error, then a cancel.
    dave.open("/request?entitlement=network-admin");
    dave.click(&dave.find("//a[normalize-space()='2h']"));
    dave.wait_for_url(|u| u.contains("duration=2h"));
    assert_eq!(
        dave.run(dave.field("Duration").prop("value"))
            .unwrap()
            .unwrap(),
        "2h"
    );
    dave.type_into(&dave.field("Duration"), "forever");
    dave.type_into(&dave.field("Reason"), "rotate keys");
    dave.click(&dave.button("Request"));
    let alert = dave.find("//*[@role='alert']");
    assert!(dave.run(alert.text()).unwrap().starts_with("Duration:"));
    assert_eq!(
        dave.run(dave.field("Reason").prop("value"))
            .unwrap()
            .unwrap(),
        "rotate keys"
    );
    dave.check("request-error");
    dave.type_into(&dave.field("Duration"), "1h");
    dave.click(&dave.button("Request"));
    dave.wait_for_url(|u| u.contains("/requests/"));
    dave.click(&dave.button("Cancel request"));
    dave.wait_for_url(|u| u.contains("done=cancelled"));
    assert_eq!(dave.status_message(), "Request cancelled.");
    assert!(dave.source().contains("dave@example.com cancelled it"));

    // Alice sees one waiting in her header, and approves with the keyboard alone.
    let mut alice = driver.browser(&demo.server, Viewport::Laptop);
    alice.sign_in("alice@example.com");
    let waiting = alice.find("//nav//a[@href='/approvals']");
    assert_eq!(alice.run(waiting.text()).unwrap().trim(), "Approvals 1");
    alice.open("/approvals");
    let page = alice.source();
    assert!(
        page.contains("INC-4211 disk full on db-1") && page.contains("0 of 1 approval"),
        "{page}"
    );
    alice.check("approvals");
    let comment = alice.tab_to(&format!("comment-{ssh}"));
    alice.run(comment.send_keys("go ahead")).unwrap();
    let approve = alice.tab_to("Approve");
    alice.press_enter(&approve);
    alice.wait_for_url(|u| u.contains("done=approved"));
    assert_eq!(alice.status_message(), "Approved.");

    // Dave's grant is active; he asks for more time from its page.
    dave.wait_for_text("/", ">Drop</button>");
    assert_eq!(
        prod_access_members(&demo.emulator_state()),
        ["dave@example.com"]
    );
    assert!(
        dave.source().contains(")</time>"),
        "the script shows the viewer's zone"
    );
    dave.check("my-access-active");
    dave.open(&format!("/requests/{ssh}"));
    dave.type_into(&dave.field("More time"), "30m");
    dave.type_into(&dave.field("Why"), "migration still running");
    dave.click(&dave.button("Ask for more time"));
    dave.wait_for_url(|u| u.contains("done=extension"));
    dave.check("request-active");

    // Alice approves the extension where she approves requests.
    alice.open("/approvals");
    assert!(alice.source().contains("30m more"), "{}", alice.source());
    alice.click(&alice.button("Approve"));
    alice.wait_for_url(|u| u.contains("done=approved"));
    dave.wait_for_text(&format!("/requests/{ssh}"), "1h + 30m");

    // He drops it; the timeline tells the story to the verified removal.
    dave.click(&dave.button("Drop: end my access now"));
    dave.wait_for_url(|u| u.contains("done=dropped"));
    assert!(dave.status_message().starts_with("Access ended."));
    wait_until("the drop to reach the tailnet", || {
        prod_access_members(&demo.emulator_state()).is_empty()
    });
    dave.wait_for_text(
        &format!("/requests/{ssh}"),
        "Access removed, checked in the tailnet",
    );
    assert!(
        dave.source()
            .contains("alice@example.com approved: go ahead")
    );
    dave.check("request-ended");

    // A denial with a comment, read by the requester.
    dave.open("/request?entitlement=monitoring-tag");
    dave.type_into(&dave.field("Reason"), "check dashboards");
    dave.click(&dave.button("Request"));
    let denied = id_of(&dave.wait_for_url(|u| u.contains("/requests/")));
    alice.open(&format!("/requests/{denied}"));
    alice.type_into(&alice.field("Comment"), "use staging");
    alice.click(&alice.button("Deny"));
    alice.wait_for_url(|u| u.contains("done=denied"));
    alice.check("request-decided");
    dave.open(&format!("/requests/{denied}"));
    assert!(
        dave.source()
            .contains("alice@example.com denied: use staging")
    );
    assert!(dave.source().contains("state-bad"), "denied is red");

    // Carol breaks glass on her own device; the device list offers no tagged server.
    let mut carol = driver.browser(&demo.server, Viewport::Laptop);
    carol.sign_in("carol@example.com");
    carol.open("/request?entitlement=prod-db");
    let options: Vec<String> = carol
        .find_all("//select[@id='device-pick']/option")
        .iter()
        .map(|o| carol.run(o.text()).unwrap())
        .collect();
    assert_eq!(options, ["All my devices", "carol-laptop"]);
    carol.choose(&carol.field("Device"), "carol-laptop");
    carol.click(&carol.button("Show for this device"));
    carol.wait_for_url(|u| u.contains("device=carol-laptop"));
    assert!(
        carol
            .source()
            .contains("What it gives on <span class=\"nowrap\">carol-laptop</span>")
    );
    carol.type_into(&carol.field("Reason"), "outage INC-8");
    carol.click(&carol.find("//input[@id='break-glass']"));
    carol.check("request-break-glass");
    carol.click(&carol.button("Request"));
    let glass = id_of(&carol.wait_for_url(|u| u.contains("done=granted")));

    // Alice reviews it afterwards from the admin pages.
    alice.open("/admin");
    assert!(
        alice.source().contains("1 break-glass grant to review"),
        "{}",
        alice.source()
    );
    alice.check("admin");
    alice.open("/admin/break-glass");
    alice.check("admin-break-glass");
    alice.type_into(
        &alice.field("What the review found"),
        "outage INC-8 confirmed",
    );
    alice.click(&alice.button("Mark reviewed"));
    alice.wait_for_url(|u| u.contains("done=reviewed"));
    assert!(
        alice
            .source()
            .contains("reviewed</span> by alice@example.com")
    );
    alice.open(&format!("/requests/{glass}"));
    assert!(
        alice
            .source()
            .contains("alice@example.com reviewed the break-glass grant: outage INC-8 confirmed")
    );
    alice.open("/admin/audit");
    alice.check("admin-audit");
    alice.open("/admin/inventory?kind=devices");
    alice.type_into(&alice.field("Search"), "db-");
    alice.click(&alice.button("Search"));
    alice.wait_for_url(|u| u.contains("q=db-"));
    let rows = alice.find_all("//tbody/tr");
    assert_eq!(rows.len(), 2, "db-1 and db-2: {}", alice.source());
    alice.check("admin-inventory");
    alice.open("/admin/compliance");
    alice.click(&alice.button("Run the checks now"));
    alice.wait_for_url(|u| u.contains("done=checked"));
    assert!(
        alice.source().contains("user-identified"),
        "{}",
        alice.source()
    );
    alice.check("admin-compliance");
    alice.open("/admin/webhooks");
    assert!(
        alice
            .source()
            .contains("Nothing is configured to hear about events")
    );
    alice.check("admin-deliveries");

    // An access review: alice starts one from the form, carol keeps both items at once.
    alice.open("/reviews");
    alice.check("reviews");
    alice.type_into(&alice.field("Name"), "SRE membership");
    alice.type_into(&alice.field("Scope"), "group:sre");
    alice.type_into(
        &alice.field("Reviewer for people without a manager"),
        "carol@example.com",
    );
    alice.click(&alice.button("Start"));
    let review = alice.wait_for_url(|u| u.contains("done=review-started"));
    let review = review
        .split("/reviews/")
        .nth(1)
        .and_then(|r| r.split('?').next())
        .unwrap()
        .to_owned();
    alice.check("review-campaign");
    carol.open(&format!("/reviews/{review}?show=mine"));
    let boxes = carol.find_all("//input[@type='checkbox']");
    assert_eq!(boxes.len(), 2, "{}", carol.source());
    for b in &boxes {
        carol.click(b);
    }
    carol.type_into(&carol.field("Reason (required to revoke)"), "both on call");
    carol.click(&carol.button("Keep selected"));
    carol.wait_for_url(|u| u.contains("done=review-decided"));
    carol.open(&format!("/reviews/{review}"));
    assert!(
        carol.source().contains("both on call"),
        "{}",
        carol.source()
    );
    carol.check("review-decided");

    // Bob takes a CI auth key: approves it himself (allowed for it), claims it in the page,
    // once.
    let mut bob = driver.browser(&demo.server, Viewport::Laptop);
    bob.sign_in("bob@example.com");
    bob.open("/request?entitlement=ci-runner-key");
    bob.type_into(&bob.field("Reason"), "new runner");
    bob.click(&bob.button("Request"));
    let key = id_of(&bob.wait_for_url(|u| u.contains("/requests/")));
    // ci-runner-key allows self-approval: the SRE approves his own, on its page.
    bob.click(&bob.button("Approve"));
    bob.wait_for_url(|u| u.contains("done=approved"));
    bob.click(&bob.button("Claim the key"));
    bob.wait_for_url(|u| u.ends_with(&format!("/requests/{key}/key")));
    let page = bob.source();
    assert!(page.contains("tailscale up --auth-key=tskey-"), "{page}");
    assert!(
        bob.find_all("//button[normalize-space()='Copy the command']")
            .len()
            == 1
    );
    bob.check("key-claimed");
    bob.open(&format!("/requests/{key}/key"));
    assert!(!bob.source().contains("tskey-"), "shown once");

    // Dave's account: his tokens and this session; revoking one says so.
    dave.open("/account");
    assert!(dave.source().contains("this session"));
    dave.check("account");
    dave.click(&dave.find("//button[starts-with(@aria-label, 'Revoke tok_')][1]"));
    dave.wait_for_url(|u| u.contains("done=token-revoked") || u.contains("/login"));

    for b in [&mut dave, &mut alice, &mut carol, &mut bob] {
        report.append(&mut b.figures);
    }
    drop((dave, alice, carol, bob));

    // Every page again on a phone.
    let mut phone = driver.browser(&demo.server, Viewport::Phone);
    phone.sign_in("alice@example.com");
    for (path, name) in [
        ("/".to_owned(), "my-access"),
        ("/request?entitlement=prod-db".to_owned(), "request-form"),
        ("/approvals".to_owned(), "approvals"),
        (format!("/requests/{ssh}"), "request-ended"),
        (format!("/requests/{glass}"), "request-break-glass"),
        ("/account".to_owned(), "account"),
        ("/admin".to_owned(), "admin"),
        ("/admin/break-glass".to_owned(), "admin-break-glass"),
        ("/admin/audit".to_owned(), "admin-audit"),
        ("/admin/inventory".to_owned(), "admin-inventory"),
        ("/admin/compliance".to_owned(), "admin-compliance"),
        ("/admin/webhooks".to_owned(), "admin-deliveries"),
        ("/reviews".to_owned(), "reviews"),
        (format!("/reviews/{review}"), "review-campaign"),
    ] {
        phone.open(&path);
        phone.check(name);
    }
    report.append(&mut phone.figures);
    drop(phone);

    // And in dark mode, where the contrast is checked again.
    let mut dark = driver.browser(&demo.server, Viewport::Dark);
    dark.sign_in("alice@example.com");
    assert_eq!(
        dark.script("return matchMedia('(prefers-color-scheme: dark)').matches;"),
        json!(true)
    );
    for (path, name) in [
        ("/".to_owned(), "my-access"),
        ("/request?entitlement=prod-db".to_owned(), "request-form"),
        (format!("/requests/{denied}"), "request-denied"),
        ("/admin".to_owned(), "admin"),
    ] {
        dark.open(&path);
        dark.check(name);
    }
    let background = dark.script("return getComputedStyle(document.body).backgroundColor;");
    assert_eq!(background, json!("rgb(13, 17, 23)"), "the dark palette");
    report.append(&mut dark.figures);
    drop(dark);

    let figures: BTreeMap<&String, Value> = report
        .iter()
        .map(|(page, f)| {
            (
                page,
                json!({"html_bytes": f.bytes, "axe_violations": f.violations}),
            )
        })
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    std::fs::write(
        screenshots().join("pages.json"),
        serde_json::to_string_pretty(&json!({"seconds": elapsed, "pages": figures})).unwrap(),
    )
    .unwrap();
    eprintln!(
        "browser suite: {elapsed:.1} s, {} page checks",
        report.len()
    );
}

/// `node` with the test provider's packages installed (scripts/test.sh runs `npm ci`); the test
/// fails without them in CI and is skipped elsewhere.
fn oidc_provider_script() -> Option<PathBuf> {
    let dir = repo().join("tests/oidc");
    let ready = dir.join("node_modules/oidc-provider").exists()
        && Command::new("node").arg("--version").output().is_ok();
    match (ready, std::env::var_os("CI").is_some()) {
        (true, _) => Some(dir.join("provider.mjs")),
        (false, true) => panic!("tests/oidc needs `npm ci` and node for the OIDC test"),
        (false, false) => {
            eprintln!("skipped: run `npm ci` in tests/oidc for the OIDC test");
            None
        }
    }
}

/// A process stopped when the test ends.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn oidc_sign_in_with_a_real_provider() {
    let (Some(driver_path), Some(script), Some(axe)) =
        (chromedriver(), oidc_provider_script(), axe_source())
    else {
        return;
    };
    let provider_port = free_port();
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let d = crate::Deployment::new("oidc", |t| {
        let listen = t
            .lines()
            .find_map(|l| l.strip_prefix("listen = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let t = t.replace(
            &format!("listen = \"{listen}\""),
            &format!("listen = \"{listen}\"\npublic_url = \"http://{listen}\""),
        );
        format!(
            "{t}\n[auth.oidc]\nissuer = \"{issuer}\"\nclient_id = \"tidegate\"\n\
             client_secret_env = \"TIDEGATE_TEST_OIDC_SECRET\"\n"
        )
    });
    let server = d.server_url();
    let mut provider = Command::new("node")
        .arg(&script)
        .args([
            &provider_port.to_string(),
            "tidegate",
            "test-secret-not-real",
            &format!("{server}/login/oidc/callback"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let out = provider.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        std::thread::spawn(move || for _ in lines {});
    }
    let _provider = Stopped(provider);
    let serve = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["serve", "--config", d.config()])
        .env("TIDEGATE_TEST_OIDC_SECRET", "test-secret-not-real")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _serve = Stopped(serve);
    wait_until("the server", || {
        crate::http_get(&format!("{server}/healthz")).is_some()
    });

    // A callback nobody started is refused.
    let forged = reqwest::blocking::get(format!(
        "{server}/login/oidc/callback?code=stolen&state=guessed"
    ))
    .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(forged.text().unwrap().contains("not started here"));

    let driver = Driver::start(&driver_path, axe);
    let mut carol = driver.browser(&server, Viewport::Laptop);
    carol.open("/request");
    carol.click(&carol.find("//a[normalize-space()='Sign in with your identity provider']"));
    // The provider's own sign-in and consent pages.
    let login = carol.find("//input[@name='login']");
    carol.type_into(&login, "carol@example.com");
    carol.type_into(&carol.find("//input[@name='password']"), "anything");
    carol.click(&carol.find("//button[normalize-space()='Sign-in']"));
    // The consent page may come next (its title is "Sign-in" too); then back to tidegate.
    let started = Instant::now();
    while !carol.url().starts_with(&server) {
        if let Some(button) = carol
            .find_all("//button[normalize-space()='Continue']")
            .first()
        {
            let _ = carol.run(button.click());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            carol.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    carol.wait_for_url(|u| u == format!("{server}/request"));
    let page = carol.source();
    assert!(
        page.contains("carol@example.com") && page.contains(">Entitlement</label>"),
        "{page}"
    );
    carol.check("oidc-signed-in");
}
