//! The web UI over HTTP as a browser sends it: sign-in (demo and `tailscale serve` headers),
//! the request → approve → active → drop round trip through forms, CSRF refusals, security
//! headers.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};

use crate::{Demo, Deployment, prod_access_members, wait_until};

/// A browser-like client for one user: keeps its session cookie, does not follow redirects.
pub(crate) struct Browser {
    http: reqwest::blocking::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    pub(crate) fn new(base: &str) -> Browser {
        Browser::with(base, reqwest::blocking::Client::builder())
    }

    fn with(base: &str, builder: reqwest::blocking::ClientBuilder) -> Browser {
        Browser {
            http: builder
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
        }
    }

    /// Keeps each cookie by name, as a browser does (one cleared with `Max-Age=0` goes).
    fn keep_cookie(&mut self, r: &reqwest::blocking::Response) {
        for set in r.headers().get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap().trim();
            let name = pair.split('=').next().unwrap();
            let mut jar: Vec<String> = self
                .cookie
                .iter()
                .flat_map(|c| c.split("; "))
                .filter(|c| c.split('=').next() != Some(name))
                .map(str::to_owned)
                .collect();
            if !set.contains("Max-Age=0") {
                jar.push(pair.to_owned());
            }
            self.cookie = (!jar.is_empty()).then(|| jar.join("; "));
        }
    }

    pub(crate) fn get_with(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::blocking::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().unwrap();
        self.keep_cookie(&r);
        r
    }

    pub(crate) fn get(&mut self, path: &str) -> (StatusCode, String) {
        let r = self.get_with(path, &[]);
        (r.status(), r.text().unwrap())
    }

    pub(crate) fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::blocking::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        let r = req.send().unwrap();
        self.keep_cookie(&r);
        r
    }

    pub(crate) fn sign_in_demo(&mut self, login: &str) {
        let r = self.post("/login", &[("user", login), ("next", "/")]);
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let cookie = r.headers()[SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
    }
}

/// The CSRF token in a page's first form.
pub(crate) fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_owned()
}

#[test]
fn request_approve_and_drop_through_the_web_ui() {
    let demo = Demo::start();
    let mut dave = Browser::new(&demo.server);

    // Not signed in: to the sign-in page, and back afterwards.
    let r = dave.get_with("/", &[]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login?next=/");
    let r = dave.get_with("/login", &[]);
    let csp = r.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let page = r.text().unwrap();
    assert!(page.contains("<option>dave@example.com</option>"), "{page}");
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script src=\"/static/app.js\" defer>")
            .count(),
        "no inline script: {page}"
    );
    dave.sign_in_demo("dave@example.com");

    // The request form, labelled, with what the grant gives computed from the policy.
    let (status, page) = dave.get("/request?entitlement=prod-ssh");
    assert_eq!(status, StatusCode::OK, "{page}");
    for label in ["Entitlement", "Duration", "Reason"] {
        assert!(
            page.contains(&format!(">{label}</label>")),
            "{label} in {page}"
        );
    }
    assert!(page.contains("What it gives"), "{page}");
    assert!(
        page.contains("TCP 22, 5432 to")
            && page.contains("SSH as ec2-user to 3 devices: ")
            && page.contains("(with a check)"),
        "the engine's statement of new access: {page}"
    );
    let token = csrf(&page);

    // A form without this session's CSRF token is refused, and nothing is created.
    let forged = dave.post(
        "/request",
        &[
            ("csrf", "0000"),
            ("entitlement", "prod-ssh"),
            ("duration", "1h"),
            ("reason", "x"),
        ],
    );
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        demo.json("dave@example.com", &["list", "--mine"])["requests"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A bad duration: the form again, with the error in the page.
    let bad = dave.post(
        "/request",
        &[
            ("csrf", &token),
            ("entitlement", "prod-ssh"),
            ("duration", "forever"),
            ("reason", "x"),
        ],
    );
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let text = bad.text().unwrap();
    assert!(text.contains("role=\"alert\">Duration:"), "{text}");

    let r = dave.post(
        "/request",
        &[
            ("csrf", &token),
            ("entitlement", "prod-ssh"),
            ("duration", "1h"),
            ("reason", "INC-4211 <disk full>"),
        ],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let detail = location(&r);
    assert!(detail.ends_with("?done=requested"), "{detail}");
    let detail = detail.split('?').next().unwrap().to_owned();
    let id = detail.strip_prefix("/requests/").unwrap().to_owned();

    // A scheduled start (the form's datetime-local, read as UTC).
    let r = dave.post(
        "/request",
        &[
            ("csrf", &token),
            ("entitlement", "network-admin"),
            ("duration", "1h"),
            ("reason", "maintenance window"),
            ("start", "2030-01-01T09:30"),
        ],
    );
    let later = location(&r);
    let later = later
        .split('?')
        .next()
        .unwrap()
        .strip_prefix("/requests/")
        .unwrap();
    assert_eq!(
        demo.json("dave@example.com", &["show", later])["start_at"],
        "2030-01-01T09:30:00Z"
    );

    // Alice approves from her Approvals page.
    let mut alice = Browser::new(&demo.server);
    alice.sign_in_demo("alice@example.com");
    let (_, page) = alice.get("/approvals");
    assert!(
        page.contains(&id) && page.contains("INC-4211 &lt;disk full&gt;"),
        "{page}"
    );
    assert!(page.contains(">Approve</button>") && page.contains(">Deny</button>"));
    assert!(page.contains("TCP 22, 5432 to"), "{page}");
    let r = alice.post(
        &format!("/requests/{id}/act"),
        &[
            ("csrf", &csrf(&page)),
            ("action", "approve"),
            ("comment", "ok"),
        ],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // Dave cannot approve his own request: not offered, and refused if forced.
    let (_, page) = dave.get("/approvals");
    assert!(!page.contains(&id));

    wait_until("the grant to be active", || {
        dave.get("/").1.contains(">Drop</button>")
    });
    assert_eq!(
        prod_access_members(&demo.emulator_state()),
        ["dave@example.com"]
    );
    let (_, page) = dave.get("/");
    assert!(page.contains("Ends <time"), "{page}");
    let r = dave.post(
        &format!("/requests/{id}/act"),
        &[("csrf", &csrf(&page)), ("action", "drop")],
    );
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    wait_until("the drop to reach the tailnet", || {
        prod_access_members(&demo.emulator_state()).is_empty()
    });

    // The timeline tells the whole story.
    wait_until("the removal to be verified", || {
        dave.get(&detail)
            .1
            .contains("Access removed, checked in the tailnet")
    });
    let (_, page) = dave.get(&detail);
    for step in [
        "dave@example.com asked for it",
        "Approved: enough approvals",
        "Access given in the tailnet",
        "dave@example.com ended it early",
    ] {
        assert!(page.contains(step), "{step} in {page}");
    }

    // Admin is for admins.
    assert_eq!(dave.get("/admin").0, StatusCode::FORBIDDEN);
    let (status, page) = alice.get("/admin");
    assert_eq!(status, StatusCode::OK);
    for part in [
        "Overdue revocations",
        "Against the live policy",
        "<td data-label=\"Name\">prod-ssh</td><td data-label=\"Strategy\">group group:prod-access</td><td data-label=\"Approvers\">group:sre</td><td data-label=\"Check\">ok</td>",
        "Managed groups",
    ] {
        assert!(page.contains(part), "{part} in {page}");
    }
    let (_, page) = alice.get("/admin/inventory");
    assert!(
        page.contains(
            "<td data-label=\"Login\">dave@example.com</td><td data-label=\"Role\">member</td>"
        ),
        "{page}"
    );
    let (_, page) = alice.get("/admin/inventory?kind=groups&q=sre");
    assert!(
        page.contains("<td data-label=\"Group\">group:sre</td><td data-label=\"Members\">alice@example.com, bob@example.com</td>"),
        "{page}"
    );
    assert!(
        !page.contains("group:engineers"),
        "the search narrows: {page}"
    );
    // The audit log, filtered, and exported.
    let (_, page) = alice.get("/admin/audit?action=grant.applied");
    assert!(
        page.contains("<td data-label=\"Action\">grant.applied</td>"),
        "{page}"
    );
    assert!(!page.contains(">request.created</td>"), "{page}");
    let (status, jsonl) = alice.get("/admin/audit.jsonl");
    assert_eq!(status, StatusCode::OK);
    let entries: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.len() >= 6 && entries.iter().all(|e| e["hash"].is_string()));
    assert_eq!(dave.get("/admin/audit.jsonl").0, StatusCode::FORBIDDEN);

    // Signing out (from the account page) ends the session on the server too.
    let (_, page) = dave.get("/account");
    let signed_in = dave.cookie.clone();
    let r = dave.post("/logout", &[("csrf", &csrf(&page))]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    dave.cookie = signed_in; // a copy of the old cookie no longer works
    assert_eq!(dave.get_with("/", &[]).status(), StatusCode::SEE_OTHER);
}

#[test]
fn tailscale_identity_headers_are_believed_only_from_the_trusted_proxy() {
    // Served over https as far as tidegate knows (the proxy ends TLS).
    let d = Deployment::new("web-proxy", |t| {
        let t = t.replace(
            "[tailnet]",
            "public_url = \"https://tidegate.example.com\"\n\n[tailnet]",
        );
        format!("{t}\n[auth]\ntrusted_proxy = [\"127.0.0.1\"]\n")
    });
    let mut server = d.serve();
    let base = d.server_url();

    // Through the proxy: signed in as the login it vouches for.
    let mut via_proxy = Browser::new(&base);
    let header = [
        ("Tailscale-User-Login", "carol@example.com"),
        ("Tailscale-User-Name", "Carol"),
    ];
    let r = via_proxy.get_with("/login?next=/request", &header);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/request");
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-tidegate_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    assert_eq!(
        r.headers()["strict-transport-security"].to_str().unwrap(),
        "max-age=31536000"
    );
    // A redirect target with a tab in it would leave the site: not followed.
    let r = via_proxy.get_with("/login?next=/%09/evil.example", &header);
    assert_eq!(location(&r), "/");
    // A second session cookie (planted for a narrower path, say) means signed out.
    let ours = via_proxy.cookie.clone().unwrap();
    via_proxy.cookie = Some(format!("{ours}; __Host-tidegate_session=planted"));
    assert_eq!(
        via_proxy.get_with("/", &header).status(),
        StatusCode::SEE_OTHER
    );
    via_proxy.cookie = Some(ours.clone());
    // A web session is no API token.
    let api = reqwest::blocking::Client::new()
        .get(format!("{base}/api/whoami"))
        .bearer_auth(ours.split_once('=').unwrap().1)
        .send()
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let r = via_proxy.get_with("/", &header);
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().unwrap().contains("carol@example.com"));
    // The proxy now speaks for someone else: carol's session is not theirs.
    let r = via_proxy.get_with("/", &[("Tailscale-User-Login", "alice@example.com")]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // The same header from another address is a forgery: no session, no identity.
    let mut elsewhere = Browser::with(
        &base,
        reqwest::blocking::Client::builder()
            .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()),
    );
    let r = elsewhere.get_with("/login", &[("Tailscale-User-Login", "alice@example.com")]);
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(elsewhere.cookie.is_none());
    assert_eq!(
        elsewhere
            .get_with("/admin", &[("Tailscale-User-Login", "alice@example.com")])
            .status(),
        StatusCode::SEE_OTHER
    );
    // And demo sign-in does not exist outside the demo.
    let r = elsewhere.post("/login", &[("user", "alice@example.com")]);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// An approver revokes someone's grant from its page, with a reason; the audit log pages back
/// through older entries; a member sees no Admin link and gets a page (not a dead end) there.
#[test]
fn revoke_from_the_page_and_page_through_the_audit_log() {
    let demo = Demo::start();
    let (dave, alice) = ("dave@example.com", "alice@example.com");
    let mut ids = Vec::new();
    for n in 0..45 {
        let r = demo.json(
            dave,
            &[
                "request",
                "prod-ssh",
                "--for",
                "1h",
                "--reason",
                &format!("INC-{n}"),
            ],
        );
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    demo.json(alice, &["approve", &ids[0]]);
    wait_until("the grant to apply", || {
        demo.json(dave, &["show", &ids[0]])["state"] == "active"
    });
    let mut a = Browser::new(&demo.server);
    a.sign_in_demo(alice);
    let (_, page) = a.get(&format!("/requests/{}", ids[0]));
    assert!(page.contains(">Reason to revoke</label>"), "{page}");
    let r = a.post(
        &format!("/requests/{}/act", ids[0]),
        &[
            ("csrf", &csrf(&page)),
            ("action", "revoke"),
            ("comment", "incident over"),
        ],
    );
    assert_eq!(location(&r), format!("/requests/{}?done=revoked", ids[0]));
    let (_, page) = a.get(&location(&r));
    assert!(page.contains("role=\"status\">Revoked."), "{page}");
    assert!(
        page.contains("alice@example.com revoked it: incident over"),
        "{page}"
    );
    // A refused action shows the page again with the error, not a dead end.
    let token = csrf(&a.get("/account").1);
    let r = a.post(
        &format!("/requests/{}/act", ids[0]),
        &[
            ("csrf", &token),
            ("action", "approve"),
            ("comment", "again"),
        ],
    );
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let text = r.text().unwrap();
    assert!(
        text.contains("role=\"alert\"") && text.contains("Timeline"),
        "{text}"
    );

    // Over 50 entries: the first page, then older ones, then back to the newest.
    let (_, first) = a.get("/admin/audit");
    assert_eq!(
        first.matches("<tr><td data-label=\"#\">").count(),
        50,
        "{first}"
    );
    let older = first
        .split("href=\"")
        .find(|s| s.starts_with("/admin/audit?") && s.contains("before="))
        .map(|s| s[..s.find('"').unwrap()].replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("no link to older entries: {first}"));
    let (_, second) = a.get(&older);
    assert!(
        second.contains("<td data-label=\"#\">1</td>"),
        "the oldest entry: {second}"
    );
    assert!(second.contains(">Newest</a>"));

    let mut d = Browser::new(&demo.server);
    d.sign_in_demo(dave);
    let (_, page) = d.get("/");
    assert!(
        !page.contains("href=\"/admin\""),
        "no Admin link for a member"
    );
    let (status, page) = d.get("/admin/audit");
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("Back to my access"), "{page}");
}

/// My access stays under 20 KB of HTML with many active grants (it was 25.6 KB with 20, found
/// by tidegate-bench pages): its lists are bounded and the rest counted.
#[test]
fn my_access_stays_small_with_many_grants() {
    let demo = Demo::start();
    let (dave, alice) = ("dave@example.com", "alice@example.com");
    let ids: Vec<String> = (0..20)
        .map(|n| {
            let r = demo.json(
                dave,
                &[
                    "request",
                    "prod-ssh",
                    "--for",
                    "1h",
                    "--reason",
                    &format!("INC-{n} a reason of some length"),
                ],
            );
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    for id in &ids {
        demo.json(alice, &["approve", id]);
    }
    wait_until("the grants to be active", || {
        demo.json(dave, &["list", "--mine", "--state", "active"])["requests"]
            .as_array()
            .unwrap()
            .len()
            == 20
    });
    let mut browser = Browser::new(&demo.server);
    browser.sign_in_demo(dave);
    let (_, page) = browser.get("/");
    assert!(page.len() <= 20 * 1024, "{} bytes", page.len());
    assert!(page.contains("And 5 more active grants"), "{page}");
}
