//! The directory of people: the source of truth for who someone is (department, title,
//! manager) and whether they still work here. Read from `[directory] file`, a CSV with the
//! header `email,name,department,title,manager,status,terminated_at` or a JSON array of objects
//! with those keys; keyed by tailnet login (a directory e-mail maps to a login through
//! `[directory] aliases`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One person as the directory has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The directory's e-mail.
    pub email: String,
    /// The tailnet login it maps to (the e-mail unless an alias says otherwise).
    pub login: String,
    pub name: String,
    pub department: String,
    pub title: String,
    /// The manager's e-mail.
    pub manager: String,
    pub terminated: bool,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub terminated_at: Option<OffsetDateTime>,
    /// `file` or `scim`.
    pub source: String,
}

/// Everyone, by tailnet login (lower case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct People {
    pub by_login: BTreeMap<String, Person>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PeopleError {
    pub path: String,
    pub message: String,
}

/// A row as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    manager: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    terminated_at: String,
}

/// `2026-11-02T17:00:00Z` or `2026-11-02` (midnight UTC).
pub fn parse_date(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    tailnet::clock::parse_rfc3339(text)
        .or_else(|| tailnet::clock::parse_rfc3339(&format!("{text}T00:00:00Z")))
}

impl People {
    /// Reads a CSV or JSON file of people (JSON when it starts with `[`).
    pub fn load(path: &Path, aliases: &BTreeMap<String, String>) -> Result<People, PeopleError> {
        let error = |message: String| PeopleError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        People::parse(&text, aliases).map_err(error)
    }

    /// Parses the file's text; errors say which row or line and what is wrong.
    pub fn parse(text: &str, aliases: &BTreeMap<String, String>) -> Result<People, String> {
        let rows: Vec<(String, Row)> = if text.trim_start().starts_with('[') {
            let rows: Vec<Row> = serde_json::from_str(text)
                .map_err(|e| format!("line {}: not a list of people: {e}", e.line()))?;
            rows.into_iter()
                .enumerate()
                .map(|(i, r)| (format!("person {}", i + 1), r))
                .collect()
        } else {
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(text.as_bytes());
            let headers = reader
                .headers()
                .map_err(|e| format!("header: {e}"))?
                .clone();
            let expected = [
                "email",
                "name",
                "department",
                "title",
                "manager",
                "status",
                "terminated_at",
            ];
            if headers.iter().collect::<Vec<_>>() != expected {
                return Err(format!("line 1: the header must be {}", expected.join(",")));
            }
            let mut rows = Vec::new();
            for (i, record) in reader.deserialize::<Row>().enumerate() {
                let row = record.map_err(|e| format!("line {}: {e}", i + 2))?;
                rows.push((format!("line {}", i + 2), row));
            }
            rows
        };
        let mut people = People::default();
        for (at, row) in rows {
            let email = row.email.trim().to_lowercase();
            if !email.contains('@') || email.chars().any(char::is_control) {
                return Err(format!("{at}: {:?} is not an e-mail", row.email));
            }
            let terminated = match row.status.trim().to_lowercase().as_str() {
                "" | "active" => false,
                "terminated" => true,
                other => {
                    return Err(format!(
                        "{at}: status {other:?}: write active or terminated"
                    ));
                }
            };
            let terminated_at = match row.terminated_at.trim() {
                "" => None,
                t => Some(parse_date(t).ok_or_else(|| {
                    format!("{at}: terminated_at {t:?}: write an RFC 3339 time or YYYY-MM-DD")
                })?),
            };
            let login = aliases
                .get(&email)
                .cloned()
                .unwrap_or_else(|| email.clone());
            let person = Person {
                email,
                login: login.clone(),
                name: row.name,
                department: row.department,
                title: row.title,
                manager: row.manager.trim().to_lowercase(),
                terminated,
                terminated_at,
                source: "file".into(),
            };
            if people.by_login.insert(login.clone(), person).is_some() {
                return Err(format!("{at}: {login} appears twice"));
            }
        }
        Ok(people)
    }

    /// Adds people from another source: someone terminated in either is terminated.
    pub fn merge(&mut self, other: People) {
        for (login, p) in other.by_login {
            match self.by_login.get_mut(&login) {
                Some(existing) => {
                    if p.terminated && !existing.terminated {
                        existing.terminated = true;
                        existing.terminated_at = p.terminated_at.or(existing.terminated_at);
                    }
                }
                None => {
                    self.by_login.insert(login, p);
                }
            }
        }
    }

    pub fn get(&self, login: &str) -> Option<&Person> {
        self.by_login.get(&login.to_lowercase())
    }
}

impl crate::service::Service {
    /// The directory as it stands: the file (read now) and the people provisioned through
    /// SCIM. Empty without a `[directory]`.
    pub async fn people(&self) -> Result<People, crate::service::ServiceError> {
        let Some(dir) = &self.config().directory else {
            return Ok(People::default());
        };
        let mut people = match &dir.file {
            Some(file) => People::load(file, &dir.aliases)
                .map_err(|e| crate::service::ServiceError::Invalid(e.to_string()))?,
            None => People::default(),
        };
        people.merge(self.scim_people().await?);
        Ok(people)
    }

    /// People provisioned through SCIM (none until the SCIM endpoint has been used).
    pub async fn scim_people(&self) -> Result<People, crate::service::ServiceError> {
        let mut people = People::default();
        for (key, value) in self.store().states(SCIM_PREFIX).await? {
            let person: Person = serde_json::from_str(&value).map_err(|e| {
                crate::service::ServiceError::Invalid(format!("stored SCIM person {key}: {e}"))
            })?;
            people.by_login.insert(person.login.clone(), person);
        }
        Ok(people)
    }
}

/// Where SCIM-provisioned people are kept among the store's named records.
pub const SCIM_PREFIX: &str = "scim:user:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_read_alike_with_aliases() {
        let aliases = BTreeMap::from([(
            "grace@corp.example".to_owned(),
            "grace@example.com".to_owned(),
        )]);
        let csv = "email,name,department,title,manager,status,terminated_at\n\
                   alice@example.com,Alice,SRE,Staff SRE,,active,\n\
                   grace@corp.example,Grace,Sales,AE,alice@example.com,terminated,2026-11-02\n";
        let people = People::parse(csv, &aliases).unwrap();
        let grace = people.get("grace@example.com").unwrap();
        assert!(grace.terminated);
        assert_eq!(grace.terminated_at, parse_date("2026-11-02T00:00:00Z"));
        let json = r#"[{"email": "alice@example.com", "name": "Alice", "department": "SRE", "title": "Staff SRE", "manager": "", "status": "active", "terminated_at": ""},
                      {"email": "grace@corp.example", "name": "Grace", "department": "Sales", "title": "AE", "manager": "alice@example.com", "status": "terminated", "terminated_at": "2026-11-02"}]"#;
        assert_eq!(People::parse(json, &aliases).unwrap(), people);
    }

    #[test]
    fn bad_rows_say_where() {
        let none = BTreeMap::new();
        let bad_status =
            "email,name,department,title,manager,status,terminated_at\nx@example.com,X,,,,gone,\n";
        assert_eq!(
            People::parse(bad_status, &none).unwrap_err(),
            "line 2: status \"gone\": write active or terminated"
        );
        assert!(
            People::parse("mail,name\n", &none)
                .unwrap_err()
                .starts_with("line 1: the header")
        );
        let bad_date = "email,name,department,title,manager,status,terminated_at\nx@example.com,X,,,,terminated,yesterday\n";
        assert!(
            People::parse(bad_date, &none)
                .unwrap_err()
                .contains("line 2: terminated_at")
        );
    }
}

/// What tidegate did about one leaver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeaverActions {
    pub login: String,
    /// Requests cancelled and grants revoked.
    pub ended: Vec<String>,
    /// Tokens and web sessions revoked.
    pub tokens: usize,
    pub suspended: bool,
}

/// Marks a leaver as acted on (so every replica, and a restart, acts once).
const LEAVER_PREFIX: &str = "leaver:";

impl crate::service::Service {
    /// Acts on everyone the directory says is terminated and who was not acted on yet.
    pub async fn act_on_leavers(
        &self,
        people: &People,
        source: &str,
    ) -> Result<Vec<LeaverActions>, crate::service::ServiceError> {
        let mut done = Vec::new();
        for p in people.by_login.values().filter(|p| p.terminated) {
            let key = format!("{LEAVER_PREFIX}{}", p.login);
            if self.store().get_state(&key).await?.is_some() {
                continue;
            }
            let actions = self.act_on_leaver(&p.login, source).await?;
            let at = crate::time_text(self.now());
            self.store()
                .put_state(
                    &key,
                    &serde_json::to_string(&actions).unwrap_or_default(),
                    &at,
                )
                .await?;
            done.push(actions);
        }
        Ok(done)
    }

    /// Ends a leaver's requests and grants, revokes their tokens and sessions, suspends their
    /// tailnet user when `[compliance] suspend_leavers`, and records it.
    pub async fn act_on_leaver(
        &self,
        login: &str,
        source: &str,
    ) -> Result<LeaverActions, crate::service::ServiceError> {
        use crate::request::State;
        let mut actions = LeaverActions {
            login: login.to_owned(),
            ..LeaverActions::default()
        };
        let open = self
            .store()
            .requests(&crate::store::RequestFilter {
                requester: Some(login.to_owned()),
                states: vec![State::Pending, State::Approved, State::Active],
                ..Default::default()
            })
            .await?;
        for r in open {
            match self.end_request_for_leaver(&r.id).await {
                Ok(()) => actions.ended.push(r.id),
                Err(e) => {
                    tracing::error!(request = %r.id, error = %e, "cannot end a leaver's request")
                }
            }
        }
        for t in self.store().tokens_of(login).await? {
            if self.store().delete_token(&t.hash).await? {
                actions.tokens += 1;
            }
        }
        if self.config().compliance.suspend_leavers {
            let users = self.tailnet().users().await?;
            if let Some(u) = users
                .iter()
                .find(|u| u.login_name.eq_ignore_ascii_case(login) && u.status != "suspended")
            {
                self.tailnet().suspend_user(&u.id).await?;
                actions.suspended = true;
            }
        }
        let at = crate::time_text(self.now());
        self.store()
            .append_audit(&[crate::audit::NewAuditEntry {
                at,
                actor: crate::request::SYSTEM.to_owned(),
                action: "leaver.acted".into(),
                request: None,
                detail: serde_json::json!({
                    "login": login,
                    "source": source,
                    "ended": actions.ended,
                    "tokens_revoked": actions.tokens,
                    "suspended": actions.suspended,
                })
                .to_string(),
            }])
            .await?;
        tracing::warn!(
            login,
            source,
            ended = actions.ended.len(),
            tokens = actions.tokens,
            suspended = actions.suspended,
            "leaver: access ended"
        );
        self.wake_reconciler();
        Ok(actions)
    }
}

/// SCIM resources as the identity provider sent them (with their ids), by kind.
const SCIM_RESOURCE: &str = "scim:resource:";

impl crate::service::Service {
    /// Every stored SCIM resource of `kind` (`Users` or `Groups`).
    pub async fn scim_resources(
        &self,
        kind: &str,
    ) -> Result<Vec<serde_json::Value>, crate::service::ServiceError> {
        Ok(self
            .store()
            .states(&format!("{SCIM_RESOURCE}{kind}:"))
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str(&v).ok())
            .collect())
    }

    pub async fn scim_resource(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, crate::service::ServiceError> {
        Ok(self
            .store()
            .get_state(&format!("{SCIM_RESOURCE}{kind}:{id}"))
            .await?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Stores a SCIM resource and, for a user, the person it describes; a person who is now
    /// terminated is acted on at once.
    pub async fn put_scim_resource(
        &self,
        kind: &str,
        id: &str,
        resource: Option<&serde_json::Value>,
        person: Option<&Person>,
    ) -> Result<(), crate::service::ServiceError> {
        let at = crate::time_text(self.now());
        let key = format!("{SCIM_RESOURCE}{kind}:{id}");
        match resource {
            Some(r) => self.store().put_state(&key, &r.to_string(), &at).await?,
            None => {
                self.store().delete_state(&key).await?;
            }
        }
        if let Some(p) = person {
            let text = serde_json::to_string(p).unwrap_or_default();
            self.store()
                .put_state(&format!("{SCIM_PREFIX}{id}"), &text, &at)
                .await?;
            tracing::info!(login = %p.login, terminated = p.terminated, "directory: SCIM person stored");
            if p.terminated {
                self.act_on_leavers(&self.scim_people().await?, "scim")
                    .await?;
            }
        }
        Ok(())
    }
}
