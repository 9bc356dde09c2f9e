//! The `smtp` output against a real SMTP server (aiosmtpd, from the peers), which requires
//! STARTTLS with a certificate of a CA made here and a login: templated addresses and subject,
//! text and HTML alternatives, an attachment from the message, Bcc kept out of the headers; a
//! temporary refusal (451) retried until delivered; a permanent one (550) failing the message
//! for good with the server's reason; a wrong password retried (it may be being rotated) and
//! never shown; `security: none` against this server, which offers no login before TLS,
//! refused without the password being sent; and the conformance scenario (weft SIGKILLed
//! while sending, every mail sent after a restart, then a clean stop).

use std::path::{Path, PathBuf};

use crate::support::*;
use crate::tls::pki;

const PASSWORD: &str = "s3cret-pw";

fn mails(dir: &Path) -> Vec<serde_json::Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// aiosmtpd requiring STARTTLS (a certificate of a CA made here) and the login
/// `shop@example.com` / `PASSWORD`, writing each mail it takes into `outbox/` as JSON; with
/// the CA's file. `None` (said loudly) where the peers are not installed.
async fn server() -> Option<(Peer, PathBuf, String)> {
    let dir = scratch();
    pki(&dir);
    let outbox = dir.join("outbox");
    let file = |name: &str| dir.join(name).display().to_string();
    let (cert, key, out) = (
        file("server.pem"),
        file("server.key"),
        outbox.display().to_string(),
    );
    let server = Peer::start(
        "aiosmtpd",
        "python",
        &[
            "{scripts}/smtp_server.py",
            "{port}",
            &out,
            &cert,
            &key,
            "shop@example.com",
            PASSWORD,
        ],
    )
    .await?;
    Some((server, outbox, file("ca.pem")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_out_over_starttls_with_templates_alternatives_and_attachments() {
    let Some((server, outbox, ca)) = server().await else {
        return;
    };
    let smtp = server.port;
    let (port, wrong, plain) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
flows:
  notify:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      smtp:
        url: "smtp://shop%40example.com:{PASSWORD}@127.0.0.1:{smtp}"
        tls: {{ ca_file: "{ca}" }}
        from: "Shop <shop@example.com>"
        to: "{{{{ .email }}}}"
        cc: "{{{{ .manager }}}}"
        bcc: audit@example.com
        subject: "Order {{{{ .id }}}} has shipped"
        text: "Hello {{{{ .name }}}}, order {{{{ .id }}}} is on its way."
        html: "<p>Hello {{{{ .name }}}}</p>"
        attachments: '[{{ "filename": "invoice-" + to_string!(.id) + ".pdf", "content": decode_base64!(.pdf), "content_type": "application/pdf" }}]'
        retry: {{ max_attempts: 3, initial_backoff: 50ms }}
  wrong_password:
    input:
      http_server: {{ address: "127.0.0.1:{wrong}", errors: detailed }}
    output:
      smtp:
        url: "smtp://shop%40example.com:not-it@127.0.0.1:{smtp}"
        tls: {{ ca_file: "{ca}" }}
        from: shop@example.com
        to: "{{{{ .email }}}}"
        subject: hello
        retry: {{ max_attempts: 2, initial_backoff: 50ms }}
  plain_text:
    input:
      http_server: {{ address: "127.0.0.1:{plain}", errors: detailed }}
    output:
      smtp:
        url: "smtp://shop%40example.com:{PASSWORD}@127.0.0.1:{smtp}"
        security: none
        from: shop@example.com
        to: "{{{{ .email }}}}"
        subject: hello
        retry: {{ max_attempts: 1 }}
"#
    );
    let weft = Weft::start(&config).await;
    // %PDF-1.4 and bytes that are no UTF-8, as base64.
    let pdf = "JVBERi0xLjQK/wCA/g==";
    let order = format!(
        r#"{{"id": 7, "name": "Ada", "email": "ada@example.org", "manager": "boss@example.org, deputy@example.org", "pdf": "{pdf}"}}"#
    );
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{port}/"), &order).await;
    assert_eq!(status, 200, "{body}\n{}", weft.stderr());
    let sent = mails(&outbox);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let mail = &sent[0];
    assert_eq!(mail["tls"], true, "STARTTLS was used");
    assert_eq!(mail["subject"], "Order 7 has shipped");
    assert_eq!(mail["from"], "Shop <shop@example.com>");
    assert_eq!(mail["to"], "ada@example.org");
    assert_eq!(mail["cc"], "boss@example.org, deputy@example.org");
    assert_eq!(mail["bcc_header"], false, "Bcc stays out of the headers");
    let mut rcpt: Vec<&str> = mail["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    rcpt.sort_unstable();
    assert_eq!(
        rcpt,
        [
            "ada@example.org",
            "audit@example.com",
            "boss@example.org",
            "deputy@example.org"
        ]
    );
    assert_eq!(
        mail["text"].as_str().unwrap().trim_end(),
        "Hello Ada, order 7 is on its way."
    );
    assert_eq!(
        mail["html"].as_str().unwrap().trim_end(),
        "<p>Hello Ada</p>"
    );
    assert_eq!(
        mail["attachments"],
        serde_json::json!([{"filename": "invoice-7.pdf", "content_type": "application/pdf", "content_b64": pdf}])
    );

    // 451 the first time: retried, then delivered once.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"id": 8, "name": "Bo", "email": "later@example.org", "manager": "", "pdf": ""}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", weft.stderr());
    assert_eq!(mails(&outbox).len(), 2);
    assert!(weft.stderr().contains("451"), "{}", weft.stderr());

    // 550: failed for good at once, with the server's reason.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"id": 9, "name": "Cy", "email": "reject@example.org", "manager": "", "pdf": ""}"#,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("no such mailbox"), "{body}");
    assert!(
        body.contains("permanent error (550)"),
        "not retried: {body}"
    );

    // A wrong password: retried, then given up on; neither password is ever shown.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{wrong}/"),
        r#"{"email": "ada@example.org"}"#,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("535") && body.contains("2 attempts"),
        "{body}"
    );
    // A server that only speaks after STARTTLS, spoken to in plain text, is not spoken to
    // with the password: it refuses the unencrypted session.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{plain}/"),
        r#"{"email": "ada@example.org"}"#,
    )
    .await;
    assert!(status.is_server_error(), "{status} {body}");
    assert_eq!(mails(&outbox).len(), 2, "nothing more was accepted");
    for text in [weft.stderr(), body] {
        assert!(
            !text.contains(PASSWORD) && !text.contains("not-it"),
            "{text}"
        );
    }
    drop(server);
}

#[test]
fn a_bad_sender_or_a_tls_block_without_tls_is_refused_at_its_field() {
    let dir = scratch();
    std::fs::write(
        dir.join("weft.yaml"),
        r#"flows:
  f:
    input:
      stdin: {}
    output:
      smtp:
        url: smtp://mail.example.com
        security: none
        tls: { ca_file: ca.pem }
        from: "not an address"
        to: x@example.com
        subject: hi
"#,
    )
    .unwrap();
    let (status, out, err) = weft_cmd(&["check", "weft.yaml"], &dir);
    assert!(!status.success(), "{out}{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("field `tls`"), "{said}");
    assert!(said.contains("field `from`"), "{said}");
    std::fs::write(
        dir.join("weft.yaml"),
        "flows:\n  f:\n    input:\n      stdin: {}\n    output:\n      smtp:\n        url: smtp://u:pw@mail.example.com\n        security: none\n        from: a@example.com\n        to: b@example.com\n        subject: hi\n",
    )
    .unwrap();
    let (status, out, err) = weft_cmd(&["check", "weft.yaml"], &dir);
    assert!(
        !status.success(),
        "a password in plain text to another host: {out}{err}"
    );
    assert!(
        format!("{out}{err}").contains("field `security`"),
        "{out}{err}"
    );
}

/// The conformance scenario (`support::an_output_loses_nothing_to_a_kill`): every message
/// becomes a mail even when weft is killed half-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mail_is_lost_when_weft_is_killed_while_sending() {
    let Some((server, outbox, ca)) = server().await else {
        return;
    };
    let output = format!(
        r#"smtp: {{ url: "smtp://shop%40example.com:{PASSWORD}@127.0.0.1:{}", tls: {{ ca_file: "{}" }}, from: shop@example.com, to: ada@example.org, subject: "n={{{{ .n }}}}" }}"#,
        server.port, ca
    );
    an_output_loses_nothing_to_a_kill(&output, || {
        mails(&outbox)
            .iter()
            .filter_map(|m| m["subject"].as_str()?.strip_prefix("n=")?.parse().ok())
            .collect()
    })
    .await;
}
