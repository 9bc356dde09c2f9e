//! No secret leaves weft: flows use secrets from the environment and from files (`${file:}`)
//! in every place a config can hold one (URLs of every component included: userinfo, query),
//! errors are forced around each of them (refused callers, failing receivers, a dead token
//! endpoint, a dead database, a dead proxy, brokers refusing a password, a bad config), and
//! nothing weft printed (trace logs of every library included), served (responses, metrics,
//! health, the DLQ API) or stored contains any secret's value.

use std::process::Stdio;
use std::time::Duration;

use http::Method;

use crate::support::*;

/// A secret value unlikely to appear by chance, of at least 32 bytes.
fn secret(name: &str) -> String {
    format!(
        "{name}-{:016x}{:016x}",
        fastrand_u64(),
        std::process::id() as u64
    )
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_anything_weft_prints_or_serves() {
    let dir = scratch();
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500));
    let dead = free_port();
    let port = free_port();

    let env_secrets = [
        ("SECRET_BEARER", secret("bearer")),
        ("SECRET_BASIC", secret("basic")),
        ("SECRET_OAUTH", secret("oauth")),
        ("SECRET_PG", secret("pg")),
        ("SECRET_HMAC", secret("hmac")),
        ("SECRET_KEY", secret("apikey")),
        ("SECRET_USER", secret("userpw")),
        ("SECRET_PROXY", secret("proxy")),
        ("SECRET_HEADER", secret("header")),
        ("SECRET_URL_PW", secret("urlpw")),
        ("SECRET_URL_Q", secret("urlquery")),
        ("SECRET_NATS", secret("natspw")),
        ("SECRET_REDIS", secret("redispw")),
        ("SECRET_AMQP", secret("amqppw")),
        ("SECRET_MQTT", secret("mqttpw")),
        // Not given to weft: the secret part of SECRET_HOOK_URL's path, as Slack's are.
        ("SECRET_HOOK_TOKEN", secret("hooktoken")),
    ];
    let hook_url = format!(
        "{}{}",
        receiver.url("/services/T0A1B2C3D/B0E4F5G6H/"),
        env_secrets[15].1
    );
    // Every broker's URL with a password the broker does not expect: each connection fails and
    // says so.
    let with_password = |var: &str, default: &str, name: &str| {
        std::env::var(var)
            .unwrap_or_else(|_| default.into())
            .replacen("://", &format!("://weft:${{{name}}}@"), 1)
    };
    let redis = with_password("WEFT_REDIS_URL", "redis://127.0.0.1:6379", "SECRET_REDIS");
    let amqp = with_password("WEFT_AMQP_URL", "amqp://127.0.0.1:5672", "SECRET_AMQP");
    let mqtt = with_password("WEFT_MQTT_URL", "mqtt://127.0.0.1:1883", "SECRET_MQTT");
    let nats = std::env::var("WEFT_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let nats = nats.replacen("://", "://weft:${SECRET_NATS}@", 1);
    let file_secrets = [("admin_token", secret("admin")), ("jwt", secret("jwt"))];
    for (name, value) in &file_secrets {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    let d = dir.display();
    let out = receiver.url("/in");
    // Credentials inside URLs: a password and a query value, both from the environment.
    let linked = format!(
        "{}?page=1&api_key=${{SECRET_URL_Q}}",
        out.replacen("://", "://weft:${SECRET_URL_PW}@", 1)
    );
    let config = format!(
        r#"admin: {{ token: "${{file:{d}/admin_token}}" }}
resources:
  auth:
    crm: {{ bearer: "${{SECRET_BEARER}}" }}
    partner: {{ basic: {{ username: weft, password: "${{SECRET_BASIC}}" }} }}
    login:
      oauth2: {{ token_url: "http://127.0.0.1:{dead}/token", client_id: weft, client_secret: "${{SECRET_OAUTH}}" }}
    custom: {{ headers: {{ X-Partner-Key: "${{SECRET_HEADER}}" }} }}
  sql:
    db: {{ url: "postgres://weft:${{SECRET_PG}}@127.0.0.1:{dead}/x" }}
flows:
  github:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /github, auth: {{ hmac: {{ preset: github, secret: "${{SECRET_HMAC}}" }} }} }}
    output:
      http_client: {{ url: "{out}", auth: crm, retry: {{ max_attempts: 1 }} }}
  keyed:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /keyed, auth: {{ api_key: {{ keys: ["${{SECRET_KEY}}"] }} }} }}
    output:
      http_client: {{ url: "{out}", auth: partner, retry: {{ max_attempts: 1 }} }}
  tokens:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /tokens, auth: {{ jwt: {{ secret: "${{file:{d}/jwt}}" }} }} }}
    output:
      http_client: {{ url: "{out}", auth: login, retry: {{ max_attempts: 1 }} }}
  users:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /users, auth: {{ basic: {{ users: {{ partner: "${{SECRET_USER}}" }} }} }} }}
    output:
      sql: {{ database: db, table: t, columns: {{ id: .id }}, retry: {{ max_attempts: 1 }} }}
  proxied:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /proxied }}
    output:
      http_client:
        url: "{out}"
        auth: custom
        client: {{ proxy: "http://weft:${{SECRET_PROXY}}@127.0.0.1:{dead}" }}
        retry: {{ max_attempts: 1 }}
  linked:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /linked, errors: detailed }}
    output:
      http_client: {{ url: "{linked}", retry: {{ max_attempts: 1 }} }}
  linked_durable:
    delivery: durable
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /linked_durable }}
    output:
      http_client: {{ url: "{linked}", retry: {{ max_attempts: 1 }} }}
  natted:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /natted, errors: detailed }}
    output:
      nats: {{ url: "{nats}", subject: weft.secrets.test }}
  redis:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /redis, errors: detailed }}
    output:
      redis_list: {{ url: "{redis}", list: weft_secrets_test, retry: {{ max_attempts: 1 }} }}
  amqp:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /amqp, errors: detailed }}
    output:
      amqp: {{ url: "{amqp}", exchange: "", routing_key: weft_secrets_test, retry: {{ max_attempts: 1 }} }}
  hooked:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /hooked, errors: detailed }}
    output:
      http_client: {{ url: "${{SECRET_HOOK_URL}}", retry: {{ max_attempts: 1 }} }}
  mqtt:
    input:
      http_server: {{ address: "127.0.0.1:{port}", path: /mqtt, errors: detailed }}
    output:
      mqtt: {{ url: "{mqtt}", topic: weft/secrets/test, retry: {{ max_attempts: 1 }} }}
"#
    );
    let env: Vec<(&str, &str)> = env_secrets
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain([
            ("WEFT_LOG", "trace"),
            ("SECRET_HOOK_URL", hook_url.as_str()),
        ])
        .collect();
    // The admin endpoint wants its token, so readiness is read from the log.
    let mut weft = Weft::spawn_in(dir.clone(), &config, &env, Stdio::null());
    let ready = eventually(Duration::from_secs(20), || {
        weft.stderr().contains("admin endpoint")
    })
    .await;
    assert!(ready, "{}", weft.stderr());
    let admin_token = &file_secrets[0].1;
    let url = |path: &str| format!("http://127.0.0.1:{port}/{path}");
    let mut served = Vec::new();
    let exchange = |method: Method, url: String, headers: Vec<(&'static str, String)>| {
        let body = r#"{"id": 1}"#.to_string();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut all = vec![("content-type", "application/json")];
            all.extend(headers);
            let (status, response_headers, text) = request_with(method, &url, &all, body).await;
            format!("{status} {response_headers:?} {text}")
        }
    };

    // Refused callers: wrong and right-looking credentials, on every kind of auth.
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    for (path, headers) in [
        (
            "github",
            vec![("x-hub-signature-256", "sha256=00".to_string())],
        ),
        ("keyed", vec![("x-api-key", "wrong".to_string())]),
        ("tokens", bearer("not.a.jwt")),
        (
            "users",
            vec![("authorization", "Basic cGFydG5lcjp3cm9uZw==".to_string())],
        ),
    ] {
        served.push(exchange(Method::POST, url(path), headers).await);
    }
    // Accepted callers whose deliveries fail: a receiver answering 500 (with the bearer and
    // basic credentials on the way out), a dead token endpoint, a dead database, a dead proxy.
    let body = r#"{"id": 1}"#;
    let signature = {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, env_secrets[4].1.as_bytes());
        let tag = ring::hmac::sign(&key, body.as_bytes());
        format!(
            "sha256={}",
            tag.as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    served.push(
        exchange(
            Method::POST,
            url("github"),
            vec![("x-hub-signature-256", signature)],
        )
        .await,
    );
    served.push(
        exchange(
            Method::POST,
            url("keyed"),
            vec![("x-api-key", env_secrets[5].1.clone())],
        )
        .await,
    );
    let jwt = {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signed = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256"}"#),
            b64(format!(r#"{{"exp":{}}}"#, now + 60).as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, file_secrets[1].1.as_bytes());
        format!(
            "{signed}.{}",
            b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref())
        )
    };
    served.push(exchange(Method::POST, url("tokens"), bearer(&jwt)).await);
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("partner:{}", env_secrets[6].1))
    };
    served.push(
        exchange(
            Method::POST,
            url("users"),
            vec![("authorization", format!("Basic {basic}"))],
        )
        .await,
    );
    served.push(exchange(Method::POST, url("proxied"), vec![]).await);
    served.push(exchange(Method::POST, url("linked"), vec![]).await);
    assert!(
        served[5..].iter().all(|s| !s.starts_with("200")),
        "every direct delivery was meant to fail: {served:#?}"
    );
    let linked_answer = served.last().unwrap().clone();
    assert!(
        linked_answer.contains("weft:[redacted]@127.0.0.1")
            && linked_answer.contains("page=1&api_key=[redacted]"),
        "a detailed answer shows the URL without its credentials: {linked_answer}"
    );
    // A webhook URL with its secret in the path, from the environment.
    let hooked = exchange(Method::POST, url("hooked"), vec![]).await;
    assert!(
        hooked.contains("/services/T0A1B2C3D/B0E4F5G6H/[redacted]"),
        "the URL is shown without its token: {hooked}"
    );
    served.push(hooked);
    served.push(exchange(Method::POST, url("linked_durable"), vec![]).await);
    for path in ["natted", "redis", "amqp", "mqtt"] {
        served.push(exchange(Method::POST, url(path), vec![]).await);
    }

    // What the admin endpoint serves, with and without its token.
    let admin = format!("http://{}", weft.admin);
    served.push(exchange(Method::GET, format!("{admin}/metrics"), vec![]).await);
    // The durable flow's failed delivery reaches its DLQ in the background.
    let dlq_url = format!("{admin}/api/v1/flows/github/dlq");
    let token = admin_token.clone();
    let mut dead_lettered = false;
    for _ in 0..100 {
        let (_, _, text) = request_with(
            Method::GET,
            &dlq_url,
            &[("authorization", &format!("Bearer {token}"))],
            String::new(),
        )
        .await;
        if text.contains("answered 500") {
            dead_lettered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dead_lettered, "{}", weft.stderr());
    for path in ["metrics", "health", "api/v1/flows/github/dlq"] {
        served.push(exchange(Method::GET, format!("{admin}/{path}"), bearer(admin_token)).await);
    }
    let dlq = served.last().unwrap().clone();
    assert!(dlq.starts_with("200"), "{dlq}");
    let dlq_url = format!("{admin}/api/v1/flows/linked_durable/dlq");
    let mut linked_dlq = String::new();
    for _ in 0..100 {
        linked_dlq = exchange(Method::GET, dlq_url.clone(), bearer(admin_token)).await;
        if linked_dlq.contains("answered 500") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        linked_dlq.contains("api_key=[redacted]"),
        "the dead letter names the URL without its credentials: {linked_dlq}"
    );
    served.push(linked_dlq);
    // Each flow's settings as the API and the dashboard show them: credentials redacted.
    for flow in [
        "github", "keyed", "tokens", "users", "proxied", "linked", "natted", "redis", "amqp",
        "mqtt",
    ] {
        let answer = exchange(
            Method::GET,
            format!("{admin}/api/v1/flows/{flow}/config"),
            bearer(admin_token),
        )
        .await;
        assert!(
            answer.starts_with("200") && answer.contains("[redacted]"),
            "{answer}"
        );
        served.push(answer);
        let page = exchange(
            Method::GET,
            format!("{admin}/ui/flows/{flow}"),
            bearer(admin_token),
        )
        .await;
        assert!(page.contains(r#"id="effective-config""#), "{page}");
        served.push(page);
    }
    assert!(
        dlq.contains("answered 500"),
        "the DLQ holds the failure: {dlq}"
    );

    // A config with errors next to its secrets.
    // A secret where a list belongs, a misspelt preset beside one, a URL of an unknown kind.
    let bad = config
        .replace(r#"keys: ["${SECRET_KEY}"]"#, r#"keys: "${SECRET_KEY}""#)
        .replace("preset: github", "preset: gitlab")
        .replace("postgres://weft:", "postgrs://weft:")
        .replacen(
            &format!("url: \"{linked}\""),
            &format!("url: \"htp{}\"", &linked[4..]),
            1,
        );
    assert_ne!(bad, config);
    std::fs::write(dir.join("bad.yaml"), bad).unwrap();
    let check = std::process::Command::new(weft_bin())
        .args(["check", "bad.yaml"])
        .current_dir(&dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    // The three, and the flow naming the database that no longer builds.
    let check_errors = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check_errors.matches("error: ").count(), 5, "{check_errors}");
    assert!(
        check_errors.contains("invalid URL `htp://weft:[redacted]@"),
        "{check_errors}"
    );
    served.push(String::from_utf8_lossy(&check.stderr).into_owned());
    served.push(String::from_utf8_lossy(&check.stdout).into_owned());

    tokio::time::sleep(Duration::from_millis(300)).await;
    weft.terminate();
    weft.wait(Duration::from_secs(10)).await;
    let printed = format!("{}\n{}", weft.stderr(), weft.stdout());
    assert!(
        printed.contains("answered 500") && printed.contains("DEBUG"),
        "the failures were logged, at debug level: {printed}"
    );
    // And what weft stored: the dead letters' reasons and their history.
    let mut stored = String::new();
    for entry in std::fs::read_dir(dir.join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        stored.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(stored.contains("answered 500"), "the store was read");
    let everything = format!("{printed}\n{}\n{stored}", served.join("\n"));
    for (name, value) in env_secrets.iter().chain(file_secrets.iter()) {
        assert!(
            !everything.contains(value.as_str()),
            "secret {name} leaked:\n{}",
            everything
                .lines()
                .filter(|l| l.contains(value.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
