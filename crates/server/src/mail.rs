//! E-mail over SMTP (lettre): each [`Mail`] tidegate decides to send, rendered as plain text
//! and HTML (maud) in one `multipart/alternative` message. `smtp://` upgrades with STARTTLS
//! when the server offers it (always, with `starttls = "required"`); `smtps://` is TLS from
//! the first byte.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use maud::{DOCTYPE, html};
use tidegate_core::config::EmailSettings;
use tidegate_core::notify::Mail;

/// How long one message may take to hand over.
const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(settings: &EmailSettings) -> Result<Mailer, String> {
        let tls = TlsParameters::new(settings.host.clone())
            .map_err(|e| format!("[email] TLS for {}: {e}", settings.host))?;
        let tls = if settings.implicit_tls {
            Tls::Wrapper(tls)
        } else if settings.starttls_required {
            Tls::Required(tls)
        } else {
            Tls::Opportunistic(tls)
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
                .port(settings.port)
                .tls(tls)
                .timeout(Some(TIMEOUT));
        if let Some((user, password)) = &settings.credentials {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let from: Mailbox = format!("tidegate <{}>", settings.from)
            .parse()
            .map_err(|e| format!("[email] from {:?}: {e}", settings.from))?;
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), String> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| format!("{:?} is not an address: {e}", mail.to))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(text(mail), page(mail)))
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

/// The plain-text part.
fn text(mail: &Mail) -> String {
    let mut out = mail.paragraphs.join("\n\n");
    if let Some((label, url)) = &mail.link {
        out.push_str(&format!("\n\n{label}: {url}\n"));
    }
    out.push_str("\n-- \ntidegate\n");
    out
}

/// The HTML part: the same words, the link as a button.
fn page(mail: &Mail) -> String {
    html! {
        (DOCTYPE)
        html {
            head { meta charset="utf-8"; title { (mail.subject) } }
            body style="font-family: system-ui, sans-serif; line-height: 1.45; color: #111" {
                @for p in &mail.paragraphs { p { (p) } }
                @if let Some((label, url)) = &mail.link {
                    p { a href=(url) style="display: inline-block; padding: .45em .9em; background: #0b4f6c; color: #fff; border-radius: .3em; text-decoration: none" { (label) } }
                    p style="color: #555; font-size: .9em" { (url) }
                }
                p style="color: #555; font-size: .9em" { "tidegate" }
            }
        }
    }
    .into_string()
}
