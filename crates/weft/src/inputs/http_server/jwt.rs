//! JWT bearer tokens for `http_server` (`auth: { jwt: … }`): `Authorization: Bearer <token>`
//! checked against a shared `secret` (HS256/384/512), a PEM `public_key` (RSA, EC or Ed25519),
//! or the keys an identity provider publishes at a `jwks_url` (RS/PS, ES256/384, EdDSA).
//!
//! - The token's `alg` must be one of `algorithms` (by default, those of the configured key
//!   kind); `none` and algorithms of another key kind are refused, so a public key can never be
//!   used as an HMAC secret. Keys a token carries itself (`jwk`, `jku`) are never used.
//! - `exp` is required; `nbf`, and `iss`/`aud` when `issuer`/`audience` are set (then they are
//!   required too), are checked with `leeway` for clock skew. With a `jwks_url`, `issuer` and
//!   `audience` are required: a provider's keys sign the tokens of every application and every
//!   tenant it serves.
//! - The key set is fetched when first needed, and in the background once it is older than
//!   `refresh` (default 10 m) while the known keys keep serving. A token naming a key id the
//!   set lacks (the provider rotated) fetches it again at once, but never within 10 s (or
//!   `refresh`) of the last try, so made-up key ids cannot make weft hammer the provider. A
//!   failed fetch keeps the keys already known; a token no known key matches while the
//!   provider is unreachable gets 503, not 401.
//! - A valid token's claims are the message's `%jwt` metadata.
//!
//! ```yaml
//! input:
//!   http_server:
//!     address: 0.0.0.0:8080
//!     path: /api/orders
//!     auth:
//!       jwt:
//!         jwks_url: https://login.example.com/.well-known/jwks.json
//!         issuer: https://login.example.com/
//!         audience: orders-api
//! # auth: { jwt: { secret: "${JWT_SECRET}" } }
//! # auth: { jwt: { public_key: "${file:/etc/weft/issuer.pem}", algorithms: [ES256] } }
//! ```
//!
//! The signatures are checked with `ring` (the crypto the rest of weft uses) through a
//! `jsonwebtoken` crypto provider, so no second crypto library is linked.

use std::str::FromStr;
use std::sync::{Arc, Once, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Uri};
use http_body_util::Full;
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, Validation};
use serde::Deserialize;

use super::auth::Refused;
use crate::clients::http::{ClientConfig, HttpClient};
use crate::config::BuildError;
use crate::config::Secret;
use crate::config::units::Dur;
use crate::core::mapping::Value;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// URL of the identity provider's JSON Web Key Set.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Shared secret for HS256/384/512 tokens.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// PEM public key (RSA, EC P-256/P-384 or Ed25519), e.g. `"${file:/path/key.pem}"`.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Algorithms accepted (default: every one of the configured key kind).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Accepted `iss` values (one or a list); when set, tokens must carry `iss`.
    #[serde(default, deserialize_with = "crate::config::de::one_or_many")]
    #[schemars(with = "crate::config::schema_types::OneOrMany")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values (one or a list); when set, tokens must carry `aud`.
    #[serde(default, deserialize_with = "crate::config::de::one_or_many")]
    #[schemars(with = "crate::config::schema_types::OneOrMany")]
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// How long a fetched key set is used before it is fetched again.
    #[serde(default = "default_refresh")]
    pub refresh: Dur,
    /// How the key set is fetched (CA file, proxy…).
    #[serde(default)]
    pub client: ClientConfig,
}

fn default_leeway() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_refresh() -> Dur {
    Dur(Duration::from_secs(600))
}

/// The longest token looked at.
const MAX_TOKEN: usize = 16 * 1024;
/// The largest key set document read.
const MAX_JWKS: usize = 1 << 20;
/// Tokens with unknown key ids fetch the set again at most this often (or every `refresh`, if
/// shorter).
const REFETCH_COOLDOWN: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most keys tried for a token that names none (a provider publishes a handful).
const MAX_CANDIDATES: usize = 8;

pub struct Jwt {
    keys: Keys,
    /// The checks, one per key family (jsonwebtoken wants one family per validation), holding
    /// between them every algorithm accepted.
    validations: Vec<Validation>,
}

enum Keys {
    Fixed(DecodingKey),
    Remote(Arc<Jwks>),
}

impl JwtConfig {
    pub fn build(&self, http: &HttpClient) -> Result<Jwt, Vec<BuildError>> {
        let err = |field: &str, m: String| vec![BuildError::new(&format!("jwt.{field}"), m)];
        install_ring_provider();
        let given = [
            self.jwks_url.is_some(),
            self.secret.is_some(),
            self.public_key.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(err(
                "jwks_url",
                "give exactly one of `jwks_url`, `secret` or `public_key`".into(),
            ));
        }
        let (keys, families): (Keys, Vec<AlgorithmFamily>) = if let Some(secret) = &self.secret {
            if secret.expose().len() < 32 {
                return Err(err(
                    "secret",
                    "an HMAC secret needs at least 32 bytes (256 bits)".into(),
                ));
            }
            (
                Keys::Fixed(DecodingKey::from_secret(secret.expose().as_bytes())),
                vec![AlgorithmFamily::Hmac],
            )
        } else if let Some(pem) = &self.public_key {
            let pem = pem.as_bytes();
            let key = DecodingKey::from_rsa_pem(pem)
                .or_else(|_| DecodingKey::from_ec_pem(pem))
                .or_else(|_| DecodingKey::from_ed_pem(pem))
                .map_err(|_| {
                    err(
                        "public_key",
                        "not a PEM RSA, EC or Ed25519 public key".into(),
                    )
                })?;
            let family = key.family();
            (Keys::Fixed(key), vec![family])
        } else {
            let url = self.jwks_url.as_deref().unwrap_or_default();
            let uri: Uri = url
                .parse()
                .ok()
                .filter(|u: &Uri| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                })
                .ok_or_else(|| {
                    err(
                        "jwks_url",
                        format!(
                            "`{}` is not an http(s) URL",
                            crate::config::secret::redact_url(url)
                        ),
                    )
                })?;
            if self.audience.is_empty() {
                return Err(err(
                    "audience",
                    "with `jwks_url`, name the `audience` your tokens are issued for: the provider's keys sign every application's tokens".into(),
                ));
            }
            if self.issuer.is_empty() {
                return Err(err(
                    "issuer",
                    "with `jwks_url`, name the `issuer`: a multi-tenant provider signs every tenant's tokens with the same keys".into(),
                ));
            }
            if self.refresh.0 < Duration::from_secs(1) {
                return Err(err("refresh", "refresh at most once a second".into()));
            }
            let client = HttpClient::configured(http, &self.client).map_err(|e| {
                e.into_iter()
                    .map(|mut e| {
                        e.field = format!("jwt.{}", e.field);
                        e
                    })
                    .collect::<Vec<_>>()
            })?;
            (
                Keys::Remote(Arc::new(Jwks {
                    uri,
                    client,
                    refresh: self.refresh.0,
                    current: RwLock::new(Arc::new(KeySet::default())),
                    fetching: tokio::sync::Mutex::new(()),
                    refreshing: std::sync::atomic::AtomicBool::new(false),
                })),
                vec![
                    AlgorithmFamily::Rsa,
                    AlgorithmFamily::Ec,
                    AlgorithmFamily::Ed,
                ],
            )
        };
        let mut algorithms = Vec::new();
        for (i, name) in self.algorithms.iter().enumerate() {
            let alg = Algorithm::from_str(name)
                .map_err(|_| err(&format!("algorithms.{i}"), format!("`{name}` is not a JWT algorithm weft checks (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)")))?;
            if !families.contains(&alg.family()) {
                return Err(err(
                    &format!("algorithms.{i}"),
                    format!("`{name}` does not go with the configured key"),
                ));
            }
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            algorithms = families
                .iter()
                .flat_map(|f| f.algorithms().iter().copied())
                .collect();
        }
        let mut validation = Validation::new_for_family(AlgorithmFamily::Hmac);
        validation.leeway = self.leeway.0.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if !self.issuer.is_empty() {
            validation.set_issuer(&self.issuer);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let validations = families
            .iter()
            .map(|family| {
                let mut v = validation.clone();
                v.algorithms = algorithms
                    .iter()
                    .copied()
                    .filter(|a| a.family() == *family)
                    .collect();
                v
            })
            .filter(|v| !v.algorithms.is_empty())
            .collect();
        Ok(Jwt { keys, validations })
    }
}

impl Jwt {
    /// Checks the bearer token in `headers`; a valid token's claims.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Value, Refused> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(Refused::new("missing bearer token"))?;
        if token.len() > MAX_TOKEN {
            return Err(Refused::new("token too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refused::new("malformed token or unsupported algorithm"))?;
        let validation = self
            .validations
            .iter()
            .find(|v| v.algorithms.contains(&header.alg))
            .ok_or(Refused::new("token algorithm not allowed"))?;
        match &self.keys {
            Keys::Fixed(key) => decode(token, key, validation),
            Keys::Remote(jwks) => {
                let mut set = jwks.current(false).await;
                let mut candidates = set.candidates(header.alg, header.kid.as_deref());
                if candidates.is_empty() && header.kid.is_some() {
                    // A key id the set lacks: the provider may have rotated.
                    set = jwks.current(true).await;
                    candidates = set.candidates(header.alg, header.kid.as_deref());
                }
                // No key for the token, and the provider did not answer the last fetch: weft
                // cannot tell a rotated key from a forged one.
                let last_failed = set.tried.is_some() && set.tried != set.fetched;
                if candidates.is_empty() && (set.fetched.is_none() || last_failed) {
                    return Err(Refused::unavailable(
                        "signing keys unavailable; retry later",
                    ));
                }
                let mut last = Refused::new("no key for this token");
                for key in candidates {
                    match decode(token, key, validation) {
                        Ok(claims) => return Ok(claims),
                        Err(refused) => last = refused,
                    }
                }
                Err(last)
            }
        }
    }
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Value, Refused> {
    jsonwebtoken::decode::<Value>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| {
            Refused::new(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired",
                ErrorKind::ImmatureSignature => "token not yet valid",
                ErrorKind::InvalidAudience => "token audience not accepted",
                ErrorKind::InvalidIssuer => "token issuer not accepted",
                ErrorKind::InvalidSignature => "invalid token signature",
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => "token has no expiry",
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => "token has no audience",
                ErrorKind::MissingRequiredClaim(_) => "token has no issuer",
                ErrorKind::InvalidAlgorithm => "token algorithm not allowed",
                _ => "invalid token",
            })
        })
}

/// A provider's key set, fetched over HTTP and kept.
struct Jwks {
    uri: Uri,
    client: HttpClient,
    refresh: Duration,
    current: RwLock<Arc<KeySet>>,
    /// One fetch at a time; those waiting use its result.
    fetching: tokio::sync::Mutex<()>,
    /// A background refresh is under way (at most one is ever spawned).
    refreshing: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<(Option<String>, Option<Algorithm>, DecodingKey)>,
    /// When the last fetch that worked finished.
    fetched: Option<Instant>,
    /// When the last fetch was tried.
    tried: Option<Instant>,
}

impl KeySet {
    /// The keys that may have signed a token with this `alg` and `kid`.
    fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Vec<&DecodingKey> {
        self.keys
            .iter()
            .filter(|(id, key_alg, key)| {
                key.family() == alg.family()
                    && key_alg.is_none_or(|a| a == alg)
                    && kid.is_none_or(|kid| id.as_deref() == Some(kid))
            })
            .map(|(_, _, key)| key)
            .take(MAX_CANDIDATES)
            .collect()
    }
}

impl Jwks {
    /// The fewest seconds between two fetches: a token naming an unknown key id fetches the
    /// set again no more often than this, however many such tokens come.
    fn cooldown(&self) -> Duration {
        self.refresh.min(REFETCH_COOLDOWN)
    }

    /// The key set. Never fetched: fetched now. Stale: fetched again in the background while
    /// the keys known keep serving. `missing_key`: a token named a key id the set lacks, so it
    /// is fetched now, unless the last try was within the cooldown.
    async fn current(self: &Arc<Self>, missing_key: bool) -> Arc<KeySet> {
        let set = self.current.read().expect("key set lock").clone();
        let recently_tried = set.tried.is_some_and(|t| t.elapsed() < self.cooldown());
        match set.fetched {
            None if !recently_tried => self.refetch_detached(set).await,
            Some(_) if missing_key && !recently_tried => self.refetch_detached(set).await,
            Some(fetched) if fetched.elapsed() >= self.refresh && !recently_tried => {
                use std::sync::atomic::Ordering;
                if self
                    .refreshing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let jwks = self.clone();
                    tokio::spawn(async move {
                        jwks.refetch().await;
                        jwks.refreshing.store(false, Ordering::Release);
                    });
                }
                set
            }
            _ => set,
        }
    }

    /// Fetches the set in a task of its own and waits for it: a caller that hangs up cannot
    /// cancel a fetch before its try is recorded (which would let made-up key ids skip the
    /// cooldown).
    async fn refetch_detached(self: &Arc<Self>, known: Arc<KeySet>) -> Arc<KeySet> {
        let jwks = self.clone();
        tokio::spawn(async move { jwks.refetch().await })
            .await
            .unwrap_or(known)
    }

    /// Fetches the set, one fetch at a time (those who waited for one use its result).
    async fn refetch(&self) -> Arc<KeySet> {
        let started = Instant::now();
        let _one = self.fetching.lock().await;
        let set = self.current.read().expect("key set lock").clone();
        if set.tried.is_some_and(|t| t >= started) {
            return set;
        }
        let fetched = self.fetch().await;
        // The end of the fetch: whoever started waiting before it uses its result, and the
        // cooldown counts from here.
        let now = Instant::now();
        let next = match fetched {
            Ok(keys) => {
                tracing::info!(url = %self.uri, keys = keys.len(), "fetched the JWT key set");
                KeySet {
                    keys,
                    fetched: Some(now),
                    tried: Some(now),
                }
            }
            Err(e) => {
                tracing::warn!(url = %self.uri, error = %e, "could not fetch the JWT key set; keeping the keys known");
                KeySet {
                    keys: set.keys.clone(),
                    fetched: set.fetched,
                    tried: Some(now),
                }
            }
        };
        let next = Arc::new(next);
        *self.current.write().expect("key set lock") = next.clone();
        next
    }

    async fn fetch(&self) -> Result<Vec<(Option<String>, Option<Algorithm>, DecodingKey)>, String> {
        let request = Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .send(request, FETCH_TIMEOUT, MAX_JWKS)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        if response
            .extensions()
            .get::<crate::clients::http::Truncated>()
            .is_some()
        {
            return Err("the key set was cut short or too large".into());
        }
        let doc: serde_json::Value =
            serde_json::from_slice(response.body()).map_err(|e| e.to_string())?;
        let listed = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("no `keys` array")?;
        let mut keys = Vec::new();
        for entry in listed {
            // Keys of a kind weft does not check, or for encryption, are passed over.
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                continue;
            };
            if matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            ) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            // A provider's set never holds an HMAC secret worth trusting.
            if key.family() == AlgorithmFamily::Hmac {
                continue;
            }
            // A key for something other than signatures (`RSA-OAEP`, say) is not used at all.
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(a) => match Algorithm::from_str(&format!("{a:?}")) {
                    Ok(alg) => Some(alg),
                    Err(_) => continue,
                },
            };
            keys.push((jwk.common.key_id.clone(), alg, key));
        }
        if keys.is_empty() {
            return Err("no signing key weft can use in the set".into());
        }
        Ok(keys)
    }
}

/// jsonwebtoken's signature checks, done with ring. Installed once, before the first token.
fn install_ring_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another provider installed first (an embedding program's) is kept.
        let _ = RING.install_default();
    });
}

static RING: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| {
        Err(jsonwebtoken::errors::Error::from(ErrorKind::Signing(
            "weft only verifies tokens".into(),
        )))
    },
    verifier_factory: ring_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::InvalidKeyFormat.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::InvalidKeyFormat.into()),
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidKeyFormat.into()),
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidKeyFormat.into()),
        compute_digest: |data, hash| {
            use jsonwebtoken::jwk::ThumbprintHash;
            let alg = match hash {
                ThumbprintHash::SHA256 => &ring::digest::SHA256,
                ThumbprintHash::SHA384 => &ring::digest::SHA384,
                ThumbprintHash::SHA512 => &ring::digest::SHA512,
                _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
            };
            Ok(ring::digest::digest(alg, data).as_ref().to_vec())
        },
    },
};

fn ring_verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl jsonwebtoken::signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> Result<(), jsonwebtoken::signature::Error> {
        use ring::signature as sig;
        let bad = |_| jsonwebtoken::signature::Error::new();
        let hmac = |alg| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(secret) => {
                ring::hmac::verify(&ring::hmac::Key::new(alg, secret), message, signature)
                    .map_err(bad)
            }
            DecodingKeyKind::RsaModulusExponent { .. } => {
                Err(jsonwebtoken::signature::Error::new())
            }
        };
        let rsa = |params: &'static sig::RsaParameters| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(der) => sig::UnparsedPublicKey::new(params, der)
                .verify(message, signature)
                .map_err(bad),
            DecodingKeyKind::RsaModulusExponent { n, e } => sig::RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .map_err(bad),
        };
        let other = |alg: &'static dyn sig::VerificationAlgorithm| match self.key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => sig::UnparsedPublicKey::new(alg, bytes)
                .verify(message, signature)
                .map_err(bad),
            DecodingKeyKind::RsaModulusExponent { .. } => {
                Err(jsonwebtoken::signature::Error::new())
            }
        };
        match self.alg {
            Algorithm::HS256 => hmac(ring::hmac::HMAC_SHA256),
            Algorithm::HS384 => hmac(ring::hmac::HMAC_SHA384),
            Algorithm::HS512 => hmac(ring::hmac::HMAC_SHA512),
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
            Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256),
            Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384),
            Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512),
            Algorithm::ES256 => other(&sig::ECDSA_P256_SHA256_FIXED),
            Algorithm::ES384 => other(&sig::ECDSA_P384_SHA384_FIXED),
            Algorithm::EdDSA => other(&sig::ED25519),
            _ => Err(jsonwebtoken::signature::Error::new()),
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}
