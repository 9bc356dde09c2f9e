//! JWT bearer tokens on `http_server`, signed here with ring the way an identity provider
//! would: RS256, ES256 and EdDSA keys published by a local JWKS server (which rotates its keys
//! and goes down; the keys known keep working), and HS256 with a shared secret. Expired,
//! early, foreign, tampered, `none` and algorithm-confused tokens are refused with 401 and
//! never reach the flow; a token weft cannot check (no key set) gets 503.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use http::Method;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::support::*;

const RSA_PEM: &[u8] = include_bytes!("../fixtures/jwt-rsa-test-only.pem");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

struct Signer {
    kid: &'static str,
    key: Key,
}

impl Signer {
    fn rsa(kid: &'static str) -> Signer {
        let der = PrivatePkcs8KeyDer::from_pem_slice(RSA_PEM).unwrap();
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        Signer {
            kid,
            key: Key::Rsa(key),
        }
    }

    fn ec(kid: &'static str) -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        Signer {
            kid,
            key: Key::Ec(key),
        }
    }

    fn ed(kid: &'static str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Signer {
            kid,
            key: Key::Ed(key),
        }
    }

    fn alg(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
            Key::Ed(_) => "EdDSA",
            Key::Hmac(_) => "HS256",
        }
    }

    /// The public key as a JWK, as a provider publishes it.
    fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Key::Ec(k) => {
                let point = k.public_key().as_ref();
                json!({"kty": "EC", "kid": self.kid, "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Key::Ed(k) => {
                json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
            Key::Hmac(_) => unreachable!("a secret is never published"),
        }
    }

    fn token(&self, claims: Value) -> String {
        self.token_with(
            json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    fn token_with(&self, header: Value, claims: Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    signed.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Key::Ec(k) => k.sign(&rng, signed.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Ed(k) => k.sign(signed.as_bytes()).as_ref().to_vec(),
            Key::Hmac(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::sign(&key, signed.as_bytes()).as_ref().to_vec()
            }
        };
        format!("{signed}.{}", b64(&sig))
    }
}

fn claims(aud: &str, exp_in: i64) -> Value {
    json!({"iss": "https://issuer.test/", "aud": aud, "sub": "user-7", "exp": now() + exp_in, "iat": now()})
}

/// A JWKS endpoint whose key set the test swaps, that counts its fetches and can fail.
#[derive(Clone, Default)]
struct Jwks {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Jwks {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let state = self.clone();
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if state.down.load(Ordering::SeqCst) {
                        return (http::StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
                    }
                    let keys = state.keys.lock().unwrap().clone();
                    // An encryption key and a key of an unknown kind are passed over.
                    let mut all = vec![
                        json!({"kty": "RSA", "use": "enc", "kid": "enc-1", "n": "AQAB", "e": "AQAB"}),
                        json!({"kty": "XYZ", "kid": "odd"}),
                    ];
                    all.extend(keys);
                    (
                        [(http::header::CONTENT_TYPE, "application/json")],
                        json!({ "keys": all }).to_string(),
                    )
                        .into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn publish(&self, signers: &[&Signer]) {
        *self.keys.lock().unwrap() = signers.iter().map(|s| s.jwk()).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn call(url: &str, token: Option<&str>) -> (u16, String, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let (status, response_headers, text) =
        request_with(Method::POST, url, &headers, r#"{"order": 1}"#.to_string()).await;
    let challenge = response_headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status.as_u16(), text, challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_checked_against_a_rotating_key_set_and_a_secret() {
    let receiver = Receiver::start().await;
    let jwks = Jwks::default();
    let jwks_url = jwks.start().await;
    let (rsa, ec, ed) = (Signer::rsa("rsa-1"), Signer::ec("ec-1"), Signer::ed("ed-1"));
    jwks.publish(&[&rsa, &ec, &ed]);
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let port = free_port();
    let config = format!(
        r#"flows:
  idp:
    input:
      http_server:
        address: "127.0.0.1:{port}"
        path: /idp
        auth:
          jwt: {{ jwks_url: "{jwks_url}", issuer: "https://issuer.test/", audience: [orders, billing], leeway: 0s, refresh: 5s }}
    pipeline:
      - map: |
          .sub = %jwt.sub
          .auth_header = %http.headers.authorization
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
  shared:
    input:
      http_server:
        address: "127.0.0.1:{port}"
        path: /shared
        auth: {{ jwt: {{ secret: "{secret}" }} }}
    output:
      http_client: {{ url: "{out}", retry: {{ max_attempts: 1 }} }}
"#,
        out = receiver.url("/in")
    );
    let weft = Weft::start(&config).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}/{path}");

    // Each provider key kind is accepted; the claims reach the flow as %jwt, and the token
    // itself is kept out of %http.
    for signer in [&rsa, &ec, &ed] {
        let token = signer.token(claims("orders", 300));
        let (status, text, _) = call(&url("idp"), Some(&token)).await;
        assert_eq!(status, 200, "{} {text} {}", signer.alg(), weft.stderr());
    }
    let seen = receiver.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.json()["sub"], "user-7");
        assert_eq!(s.json()["auth_header"], Value::Null);
    }
    assert_eq!(jwks.fetches(), 1, "the key set is fetched once and kept");

    let refused = |what: &str, status: u16, text: &str, needle: &str| {
        assert_eq!(status, 401, "{what}: {text}");
        assert!(text.contains(needle), "{what}: `{text}` lacks `{needle}`");
    };
    let (status, text, challenge) = call(&url("idp"), None).await;
    refused("no token", status, &text, "missing bearer token");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let (status, text, _) = call(&url("idp"), Some(&ec.token(claims("orders", -60)))).await;
    refused("expired", status, &text, "expired");
    let mut early = claims("orders", 300);
    early["nbf"] = json!(now() + 120);
    let (status, text, _) = call(&url("idp"), Some(&ec.token(early))).await;
    refused("not yet valid", status, &text, "not yet valid");
    let (status, text, _) = call(&url("idp"), Some(&ec.token(claims("payroll", 300)))).await;
    refused("foreign audience", status, &text, "audience");
    let mut foreign = claims("orders", 300);
    foreign["iss"] = json!("https://evil.test/");
    let (status, text, _) = call(&url("idp"), Some(&ec.token(foreign))).await;
    refused("foreign issuer", status, &text, "issuer");
    let mut no_exp = claims("orders", 300);
    no_exp.as_object_mut().unwrap().remove("exp");
    let (status, text, _) = call(&url("idp"), Some(&ec.token(no_exp))).await;
    refused("no expiry", status, &text, "expiry");
    // A valid token with its claims changed after signing.
    let token = rsa.token(claims("orders", 300));
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims("orders", 300);
    forged["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    let (status, text, _) = call(&url("idp"), Some(&tampered)).await;
    refused("tampered", status, &text, "signature");
    // `alg: none` with no signature.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("orders", 300).to_string().as_bytes())
    );
    let (status, text, _) = call(&url("idp"), Some(&none)).await;
    refused("alg none", status, &text, "algorithm");
    // Algorithm confusion: HS256 "signed" with the RSA public key's bytes as the secret.
    let public = Signer {
        kid: "rsa-1",
        key: Key::Hmac(rsa.jwk()["n"].as_str().unwrap().as_bytes().to_vec()),
    };
    let (status, text, _) = call(&url("idp"), Some(&public.token(claims("orders", 300)))).await;
    refused(
        "HS256 against a key set",
        status,
        &text,
        "algorithm not allowed",
    );
    // The shared-secret flow: its secret works, another does not, and a provider's token is of
    // the wrong kind there.
    let hs = Signer {
        kid: "k",
        key: Key::Hmac(secret.as_bytes().to_vec()),
    };
    let (status, text, _) = call(&url("shared"), Some(&hs.token(json!({"exp": now() + 60})))).await;
    assert_eq!(status, 200, "{text}");
    let wrong = Signer {
        kid: "k",
        key: Key::Hmac(b"another-secret-of-at-least-32-bytes!!".to_vec()),
    };
    let (status, text, _) = call(
        &url("shared"),
        Some(&wrong.token(json!({"exp": now() + 60}))),
    )
    .await;
    refused("wrong secret", status, &text, "signature");
    let (status, text, _) = call(&url("shared"), Some(&ec.token(claims("orders", 300)))).await;
    refused(
        "ES256 on the secret flow",
        status,
        &text,
        "algorithm not allowed",
    );
    assert_eq!(
        receiver.seen().len(),
        4,
        "no refused request reached a flow"
    );

    // Rotation: the provider replaces ec-1 with ec-2. A token from the new key is accepted at
    // once (its unknown key id fetches the set again); the retired key's tokens are refused.
    let ec2 = Signer::ec("ec-2");
    jwks.publish(&[&rsa, &ec2, &ed]);
    tokio::time::sleep(std::time::Duration::from_millis(5100)).await;
    let before = jwks.fetches();
    let (status, text, _) = call(&url("idp"), Some(&ec2.token(claims("billing", 300)))).await;
    assert_eq!(status, 200, "rotated key: {text} {}", weft.stderr());
    // The kid-miss fetch (and perhaps the stale set's background one, which it joins).
    assert!((before + 1..=before + 2).contains(&jwks.fetches()));
    tokio::time::sleep(std::time::Duration::from_millis(5100)).await;
    let (status, text, _) = call(&url("idp"), Some(&ec.token(claims("orders", 300)))).await;
    refused("retired key", status, &text, "no key");

    // Tokens naming made-up key ids cannot make weft hammer the provider: no fetch within the
    // cooldown of the last (here `refresh`, 5 s).
    let before = jwks.fetches();
    for i in 0..30 {
        let token = ec.token_with(
            json!({"alg": "ES256", "kid": format!("made-up-{i}")}),
            claims("orders", 300),
        );
        let (status, _, _) = call(&url("idp"), Some(&token)).await;
        assert_eq!(status, 401);
    }
    assert!(
        jwks.fetches() <= before + 2,
        "{} fetches for 30 unknown key ids",
        jwks.fetches() - before
    );

    // The provider goes down: the keys already known keep working.
    jwks.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(5100)).await;
    let (status, text, _) = call(&url("idp"), Some(&ec.token(claims("orders", 300)))).await;
    assert_eq!(
        (status, text.contains("unavailable")),
        (503, true),
        "an unknown key while the provider is down cannot be told from a forgery: {text}"
    );
    let (status, text, _) = call(&url("idp"), Some(&ed.token(claims("orders", 300)))).await;
    assert_eq!(status, 200, "known key while the provider is down: {text}");
    assert!(weft.stderr().contains("could not fetch the JWT key set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_that_cannot_be_fetched_means_503_not_401() {
    let receiver = Receiver::start().await;
    let dead = free_port();
    let port = free_port();
    let weft = Weft::start(&format!(
        r#"flows:
  idp:
    input:
      http_server:
        address: "127.0.0.1:{port}"
        auth: {{ jwt: {{ jwks_url: "http://127.0.0.1:{dead}/jwks", issuer: "https://issuer.test/", audience: orders }} }}
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/in")
    ))
    .await;
    let token = Signer::ec("ec-1").token(claims("orders", 300));
    let (status, text, _) = call(&format!("http://127.0.0.1:{port}/"), Some(&token)).await;
    assert_eq!(status, 503, "{text} {}", weft.stderr());
    assert!(text.contains("signing keys unavailable"), "{text}");
    assert!(receiver.seen().is_empty());
}
