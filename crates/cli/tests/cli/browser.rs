//! The web UI in a real browser: headless Chromium from Debian driven over WebDriver
//! (`chromedriver`), with a small W3C WebDriver client written here. Fields are found through
//! their labels and buttons by their names, as a screen reader would. Screenshots go to
//! `target/browser-screenshots/` as test artefacts.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{Demo, free_port, prod_access_members, repo};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

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

struct Driver {
    process: Child,
    url: String,
    http: reqwest::blocking::Client,
}

impl Driver {
    fn start(path: &PathBuf) -> Driver {
        let port = free_port();
        let process = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let started = Instant::now();
        while http.get(format!("{url}/status")).send().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { process, url, http }
    }

    /// A new browser window of `width` × `height`; a phone's viewport when `phone`.
    fn browser(&self, width: u32, height: u32, phone: bool) -> Browser<'_> {
        let mut options = json!({
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
        });
        if phone {
            options["mobileEmulation"] = json!({"deviceMetrics": {
                "width": width, "height": height, "pixelRatio": 3.0, "touch": true,
            }});
        }
        let answer: Value = self
            .http
            .post(format!("{}/session", self.url))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": options,
            }}}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        Browser { driver: self, id }
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
    id: String,
}

impl Browser<'_> {
    fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, String)> {
        let url = format!("{}/session/{}{path}", self.driver.url, self.id);
        let mut req = self.driver.http.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer: Value = req.send().unwrap().json().unwrap();
        match answer["value"]["error"].as_str() {
            Some(error) => Err((error.to_owned(), answer["value"]["message"].to_string())),
            None => Ok(answer["value"].clone()),
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|(error, message)| panic!("WebDriver {path}: {error}: {message}"))
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None)
    }

    fn open(&self, url: &str) {
        self.post("/url", json!({"url": url}));
    }

    fn source(&self) -> String {
        self.get("/source").as_str().unwrap().to_owned()
    }

    fn find_all(&self, xpath: &str) -> Vec<String> {
        self.post("/elements", json!({"using": "xpath", "value": xpath}))
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_owned())
            .collect()
    }

    fn find(&self, xpath: &str) -> String {
        let all = self.find_all(xpath);
        assert!(
            !all.is_empty(),
            "nothing matches {xpath} in\n{}",
            self.source()
        );
        all[0].clone()
    }

    /// The form field whose `<label>` reads `label`.
    fn field(&self, label: &str) -> String {
        // Right after a click the old page may still be going away: look again.
        for _ in 0..50 {
            let l = self.find(&format!("//label[normalize-space()='{label}']"));
            let path = format!("/element/{l}/attribute/for");
            match self.try_call(reqwest::Method::GET, &path, None) {
                Ok(target) => {
                    let id = target
                        .as_str()
                        .unwrap_or_else(|| panic!("label {label} names no field"));
                    return self.find(&format!("//*[@id='{id}']"));
                }
                Err((error, _)) if error == "stale element reference" => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((error, message)) => panic!("label {label}: {error}: {message}"),
            }
        }
        panic!("label {label} kept going stale")
    }

    fn button(&self, name: &str) -> String {
        self.find(&format!("//button[normalize-space()='{name}']"))
    }

    fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), json!({}));
    }

    fn type_into(&self, element: &str, text: &str) {
        self.post(&format!("/element/{element}/clear"), json!({}));
        self.post(&format!("/element/{element}/value"), json!({"text": text}));
    }

    fn choose(&self, select: &str, option_text: &str) {
        let option = self.post(
            &format!("/element/{select}/element"),
            json!({"using": "xpath", "value": format!(".//option[normalize-space()='{option_text}']")}),
        );
        self.click(option[ELEMENT].as_str().unwrap());
    }

    fn screenshot(&self, name: &str) {
        let png = self.get("/screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = repo().join("target/browser-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Waits until the page's URL satisfies `done` (a click's navigation may still be going).
    fn wait_for_url(&self, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.get("/url").as_str().unwrap().to_owned();
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

    /// Reloads `url` until its page contains `text`.
    fn wait_for_text(&self, url: &str, text: &str) {
        let started = Instant::now();
        loop {
            self.open(url);
            if self.source().contains(text) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{text:?} never appeared on {url}:\n{}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn sign_in(&self, server: &str, login: &str) {
        self.open(&format!("{server}/"));
        assert!(self.get("/url").as_str().unwrap().contains("/login"));
        let user = self.field("User");
        self.choose(&user, login);
        self.click(&self.button("Sign in"));
        self.wait_for_url(|u| !u.contains("/login"));
        assert!(self.source().contains(login), "signed in as {login}");
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self.driver.url, self.id);
        let _ = self.driver.http.delete(url).send();
    }
}

#[test]
fn request_approve_and_drop_in_chromium() {
    let Some(path) = chromedriver() else {
        return;
    };
    let started = Instant::now();
    let demo = Demo::start();
    let driver = Driver::start(&path);

    // Dave requests production SSH and sees what it would give him before he sends it.
    let dave = driver.browser(1280, 900, false);
    dave.sign_in(&demo.server, "dave@example.com");
    dave.open(&format!("{}/request", demo.server));
    let entitlement = dave.field("Entitlement");
    dave.choose(&entitlement, "prod-ssh: SSH and PostgreSQL on production");
    dave.click(&dave.button("Preview"));
    dave.wait_for_url(|u| u.contains("entitlement=prod-ssh"));
    let page = dave.source();
    assert!(
        page.contains("What it gives") && page.contains("TCP 22, 5432 to"),
        "{page}"
    );
    dave.type_into(&dave.field("Duration"), "2h");
    dave.type_into(&dave.field("Reason"), "INC-4211 disk full on db-1");
    dave.screenshot("1-request-preview");
    dave.click(&dave.button("Request"));
    let url = dave.wait_for_url(|u| u.contains("/requests/"));
    let id = url.rsplit('/').next().unwrap().to_owned();
    assert!(id.starts_with("r-"), "{url}");
    assert!(dave.source().contains("pending"));

    // Alice approves it from her approvals, in a browser of her own.
    let alice = driver.browser(1280, 900, false);
    alice.sign_in(&demo.server, "alice@example.com");
    alice.open(&format!("{}/approvals", demo.server));
    let page = alice.source();
    assert!(
        page.contains("INC-4211 disk full on db-1") && page.contains("TCP 22, 5432 to"),
        "{page}"
    );
    alice.type_into(&alice.field("Comment"), "go ahead");
    alice.screenshot("2-approvals");
    alice.click(&alice.button("Approve"));

    // Dave sees the active grant with its time left, then drops it.
    dave.wait_for_text(&format!("{}/", demo.server), ">Drop</button>");
    assert!(dave.source().contains("in 1 h 59 min") || dave.source().contains("in 2 h"));
    assert_eq!(
        prod_access_members(&demo.emulator_state()),
        ["dave@example.com"]
    );
    // The script (allowed by the CSP, from /static/) shows the expiry in the viewer's zone.
    assert!(dave.source().contains(")</time>"), "{}", dave.source());
    dave.screenshot("3-my-access-active");
    dave.click(&dave.button("Drop"));
    let started_drop = Instant::now();
    while !prod_access_members(&demo.emulator_state()).is_empty() {
        assert!(
            started_drop.elapsed() < Duration::from_secs(20),
            "the drop never reached the tailnet"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dave.wait_for_text(
        &format!("{}/requests/{id}", demo.server),
        "Access removed, checked in the tailnet",
    );
    dave.screenshot("4-request-timeline");

    // On a phone: the same page, readable.
    let phone = driver.browser(390, 844, true);
    phone.sign_in(&demo.server, "carol@example.com");
    phone.open(&format!("{}/request", demo.server));
    let width: Value = phone.post(
        "/execute/sync",
        json!({"script": "return [document.documentElement.scrollWidth, window.innerWidth]", "args": []}),
    );
    phone.screenshot("5-phone-request");
    let (scroll, viewport) = (width[0].as_u64().unwrap(), width[1].as_u64().unwrap());
    assert_eq!(viewport, 390, "a phone's viewport");
    assert!(
        scroll <= viewport,
        "no horizontal scrolling on a phone: {scroll} > {viewport}"
    );
    eprintln!("browser suite: {:.1} s", started.elapsed().as_secs_f64());
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
    let (Some(driver_path), Some(script)) = (chromedriver(), oidc_provider_script()) else {
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
    crate::wait_until("the server", || {
        crate::http_get(&format!("{server}/healthz")).is_some()
    });

    // A callback nobody started is refused.
    let forged = reqwest::blocking::get(format!(
        "{server}/login/oidc/callback?code=stolen&state=guessed"
    ))
    .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(forged.text().unwrap().contains("not started here"));

    let driver = Driver::start(&driver_path);
    let carol = driver.browser(1280, 900, false);
    carol.open(&format!("{server}/request"));
    carol.click(&carol.find("//a[normalize-space()='Sign in with your identity provider']"));
    // The provider's own sign-in and consent pages.
    let login = carol.find("//input[@name='login']");
    carol.type_into(&login, "carol@example.com");
    carol.type_into(&carol.find("//input[@name='password']"), "anything");
    carol.click(&carol.find("//button[normalize-space()='Sign-in']"));
    // The consent page may come next (its title is "Sign-in" too); then back to tidegate.
    let started = Instant::now();
    while !carol.get("/url").as_str().unwrap().starts_with(&server) {
        if let Some(button) = carol
            .find_all("//button[normalize-space()='Continue']")
            .first()
        {
            carol.click(button);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            carol.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    carol.wait_for_url(|u| u == format!("{server}/request"));
    assert_eq!(
        carol.get("/url").as_str().unwrap(),
        format!("{server}/request"),
        "{}",
        carol.source()
    );
    let page = carol.source();
    assert!(
        page.contains("carol@example.com") && page.contains(">Entitlement</label>"),
        "{page}"
    );
    carol.screenshot("6-oidc-signed-in");
}
