//! A PostgreSQL logical replication client for the `postgres_cdc` input: the wire protocol
//! of a `replication=database` connection (startup, password, MD5 or SCRAM-SHA-256 login,
//! TLS as the URL's `sslmode` says, `prefer` by default, simple queries, `START_REPLICATION`) and the
//! `pgoutput` plugin's messages decoded into row changes. tokio-postgres and sqlx speak no
//! replication protocol; `postgres-protocol` writes the frontend messages and does SCRAM, and
//! the few backend messages a replication connection gets are read here.
//!
//! The server keeps the slot's position: it sends again everything after the last LSN this
//! client confirmed, so confirming only what was delivered makes the input at least once.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use serde_json::Value as Json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where and as whom to connect, from a `postgres://` URL.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
    /// TLS unless `sslmode` is `disable` or `allow`: the certificate always checked, against
    /// the public roots or `sslrootcert`.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// `require`, `verify-ca`, `verify-full`: a server without TLS is refused (with `prefer`,
    /// the default, it is talked to in plain text).
    tls_required: bool,
}

/// A refusal or failure, as PostgreSQL states it (`code`: its SQLSTATE).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PgError {
    pub code: Option<String>,
    pub message: String,
}

impl PgError {
    fn new(message: impl Into<String>) -> PgError {
        PgError {
            code: None,
            message: message.into(),
        }
    }
}

impl From<std::io::Error> for PgError {
    fn from(e: std::io::Error) -> PgError {
        PgError::new(e.to_string())
    }
}

impl Target {
    /// Reads a `postgres://user:password@host:port/database?sslmode=…` URL. Errors never
    /// repeat the URL, which holds a password.
    pub fn from_url(url: &str) -> Result<Target, String> {
        let parsed = url::Url::parse(url).map_err(|_| "not a valid postgres:// URL".to_string())?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err("CDC needs a postgres:// URL".into());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = match parsed.username() {
            "" => "postgres".to_string(),
            u => decode(u),
        };
        let database = match parsed.path().trim_start_matches('/') {
            "" => user.clone(),
            d => decode(d),
        };
        let mut mode = "prefer".to_string();
        let mut root: Option<String> = None;
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => mode = value.into_owned(),
                "sslrootcert" => root = Some(value.into_owned()),
                _ => {}
            }
        }
        let tls_required = matches!(mode.as_str(), "require" | "verify-ca" | "verify-full");
        let tls = match mode.as_str() {
            "disable" | "allow" => None,
            "prefer" | "require" | "verify-ca" | "verify-full" => {
                let files = super::tls::TlsFiles {
                    ca_file: root,
                    cert_file: None,
                    key_file: None,
                };
                Some(std::sync::Arc::new(
                    files.client_config("url", None).map_err(|e| {
                        e.into_iter()
                            .map(|e| e.message)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })?,
                ))
            }
            other => return Err(format!("sslmode `{other}` is not one PostgreSQL knows")),
        };
        Ok(Target {
            host: parsed
                .host_str()
                .unwrap_or("localhost")
                .trim_matches(['[', ']'])
                .to_string(),
            port: parsed.port().unwrap_or(5432),
            user,
            password: parsed.password().map(decode),
            database,
            tls,
            tls_required,
        })
    }

    /// `host:port/database`, for messages.
    pub fn shown(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A logged-in replication connection.
pub struct Connection {
    io: Box<dyn Io>,
    buf: BytesMut,
}

/// One backend message: its tag and body.
struct Backend {
    tag: u8,
    body: Bytes,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message taken from the server: a row of values up to PostgreSQL's 1 GB each
/// is refused beyond this.
const MAX_MESSAGE: usize = 256 << 20;

impl Connection {
    /// Connects, asks for TLS if the URL wants it, and logs in.
    pub async fn open(target: &Target) -> Result<Connection, PgError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| {
            PgError::new(format!(
                "{}: no connection within {CONNECT_TIMEOUT:?}",
                target.shown()
            ))
        })?
        .map_err(|e| PgError::new(format!("{}: {e}", target.shown())))?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &target.tls {
            None => Box::new(tcp),
            Some(config) => {
                let mut tcp = tcp;
                let mut out = BytesMut::new();
                frontend::ssl_request(&mut out);
                tcp.write_all(&out).await?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await?;
                match answer[0] {
                    b'S' => {}
                    // `prefer`: go on in plain text, as libpq does.
                    b'N' if !target.tls_required => {
                        return Connection::started(Box::new(tcp), target).await;
                    }
                    _ => {
                        return Err(PgError::new(format!(
                            "{}: the server does not offer TLS, which sslmode asks for",
                            target.shown()
                        )));
                    }
                }
                let name =
                    rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|_| {
                        PgError::new(format!(
                            "`{}` is not a host name TLS can check",
                            target.host
                        ))
                    })?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        PgError::new(format!(
                            "{}: TLS: {e} (a private CA: `sslrootcert=ca.pem` in the URL)",
                            target.shown()
                        ))
                    })?;
                Box::new(stream)
            }
        };
        Connection::started(io, target).await
    }

    async fn started(io: Box<dyn Io>, target: &Target) -> Result<Connection, PgError> {
        let mut connection = Connection {
            io,
            buf: BytesMut::with_capacity(64 << 10),
        };
        connection.login(target).await?;
        Ok(connection)
    }

    async fn send(
        &mut self,
        write: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
    ) -> Result<(), PgError> {
        let mut out = BytesMut::new();
        write(&mut out)?;
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn login(&mut self, target: &Target) -> Result<(), PgError> {
        // Values come as text; these make that text the same whatever the server's defaults.
        let params = [
            ("user", target.user.as_str()),
            ("database", target.database.as_str()),
            ("replication", "database"),
            ("application_name", "weft"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("bytea_output", "hex"),
            ("extra_float_digits", "3"),
        ];
        self.send(|out| frontend::startup_message(params.iter().copied(), out))
            .await?;
        let password = || {
            target
                .password
                .as_deref()
                .ok_or_else(|| PgError::new("the server asks for a password and the URL has none"))
        };
        let mut scram: Option<ScramSha256> = None;
        let mut scram_checked = false;
        loop {
            let message = self.read().await?;
            match message.tag {
                b'R' => {
                    let mut body = message.body.clone();
                    need(&body, 4)?;
                    let kind = body.get_i32();
                    match kind {
                        // A SCRAM login ends with the server's proof: one that skips it is
                        // not the server that knows the password.
                        0 if scram.is_some() && !scram_checked => {
                            return Err(PgError::new(
                                "SCRAM: the server did not prove it knows the password",
                            ));
                        }
                        0 => {}
                        3 => {
                            let p = password()?.to_string();
                            self.send(|out| frontend::password_message(p.as_bytes(), out))
                                .await?;
                        }
                        5 => {
                            need(&body, 4)?;
                            let mut salt = [0u8; 4];
                            body.copy_to_slice(&mut salt);
                            let hashed = postgres_protocol::authentication::md5_hash(
                                target.user.as_bytes(),
                                password()?.as_bytes(),
                                salt,
                            );
                            self.send(|out| frontend::password_message(hashed.as_bytes(), out))
                                .await?;
                        }
                        10 => {
                            let offered: Vec<String> = body
                                .split(|b| *b == 0)
                                .filter(|m| !m.is_empty())
                                .map(|m| String::from_utf8_lossy(m).into_owned())
                                .collect();
                            if !offered.iter().any(|m| m == "SCRAM-SHA-256") {
                                return Err(PgError::new(format!(
                                    "the server offers no login weft speaks ({})",
                                    offered.join(", ")
                                )));
                            }
                            let s = ScramSha256::new(
                                password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            let first = s.message().to_vec();
                            scram = Some(s);
                            self.send(|out| {
                                frontend::sasl_initial_response("SCRAM-SHA-256", &first, out)
                            })
                            .await?;
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| PgError::new("SCRAM out of order"))?;
                            s.update(&body)
                                .map_err(|e| PgError::new(format!("SCRAM: {e}")))?;
                            let next = s.message().to_vec();
                            self.send(|out| frontend::sasl_response(&next, out)).await?;
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| PgError::new("SCRAM out of order"))?;
                            s.finish(&body).map_err(|e| {
                                PgError::new(format!("SCRAM: the server's proof failed: {e}"))
                            })?;
                            scram_checked = true;
                        }
                        other => {
                            return Err(PgError::new(format!(
                                "the server asks for a login weft does not speak (method {other})"
                            )));
                        }
                    }
                }
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// The next message that is not a notice or a parameter report; an error answer is
    /// returned as the error.
    async fn read(&mut self) -> Result<Backend, PgError> {
        loop {
            let len = loop {
                if self.buf.len() >= 5 {
                    // Judged as soon as it is known, before anything of it is held.
                    let len = (&self.buf[1..5]).get_u32() as usize;
                    if !(4..=MAX_MESSAGE).contains(&len) {
                        return Err(PgError::new(format!(
                            "the server sent a message of {len} bytes"
                        )));
                    }
                    if self.buf.len() > len {
                        break len;
                    }
                }
                if self.buf.capacity() - self.buf.len() < 8192 {
                    self.buf.reserve(64 << 10);
                }
                if self.io.read_buf(&mut self.buf).await? == 0 {
                    return Err(PgError::new("the server closed the connection"));
                }
            };
            let mut frame = self.buf.split_to(1 + len);
            let tag = frame[0];
            frame.advance(5);
            let body = frame.freeze();
            match tag {
                b'E' => return Err(error_of(&body)),
                b'N' | b'S' | b'K' => {}
                _ => return Ok(Backend { tag, body }),
            }
        }
    }

    /// Runs `sql` (simple query protocol) and gives back its rows as text.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.send(|out| frontend::query(sql, out)).await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.read().await {
                Ok(m) if m.tag == b'Z' => break,
                Ok(m) if m.tag == b'D' => rows.push(data_row(m.body)?),
                Ok(_) => {}
                // The server still ends the exchange with ReadyForQuery.
                Err(e) if e.code.is_some() => failed = Some(e),
                Err(e) => return Err(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `START_REPLICATION`: from here on the connection carries the slot's changes.
    pub async fn start(
        mut self,
        slot: &str,
        publication: &str,
        from: u64,
    ) -> Result<Stream, PgError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
            ident(slot),
            lsn_text(from),
            literal(&ident(publication)),
        );
        self.send(|out| frontend::query(&sql, out)).await?;
        loop {
            let message = self.read().await?;
            if message.tag == b'W' {
                break;
            }
        }
        Ok(Stream {
            connection: self,
            relations: HashMap::new(),
        })
    }
}

/// What an `ErrorResponse` says: its SQLSTATE and message.
fn error_of(body: &[u8]) -> PgError {
    let mut code = None;
    let mut message = String::new();
    let mut detail = None;
    for field in body.split(|b| *b == 0) {
        let Some((&kind, text)) = field.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(text).into_owned();
        match kind {
            b'C' => code = Some(text),
            b'M' => message = text,
            b'D' => detail = Some(text),
            _ => {}
        }
    }
    if let Some(detail) = detail {
        message = format!("{message} ({detail})");
    }
    if let Some(code) = &code {
        message = format!("{code}: {message}");
    }
    PgError { code, message }
}

fn data_row(mut body: Bytes) -> Result<Vec<Option<String>>, PgError> {
    need(&body, 2)?;
    let count = body.get_u16();
    (0..count)
        .map(|_| {
            need(&body, 4)?;
            let len = body.get_i32();
            if len < 0 {
                return Ok(None);
            }
            need(&body, len as usize)?;
            let value = body.split_to(len as usize);
            Ok(Some(String::from_utf8_lossy(&value).into_owned()))
        })
        .collect()
}

/// `"name"`, quoted as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, quoted as an SQL string.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An LSN as PostgreSQL writes it: `16/B374D848`.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

/// The changes of a started replication.
pub struct Stream {
    connection: Connection,
    /// The tables seen so far, by OID (pgoutput describes a table before its first change).
    relations: HashMap<u32, Relation>,
}

struct Relation {
    schema: String,
    table: String,
    /// Name, type OID, and whether it is part of the key (the replica identity).
    columns: Vec<(String, u32, bool)>,
}

/// What the stream brings.
pub enum Event {
    /// A transaction starts; `lsn` is where it commits.
    Begin {
        lsn: u64,
        xid: u32,
        commit_time: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// One row changed: `op` is `insert`, `update` or `delete`.
    Change {
        op: &'static str,
        schema: String,
        table: String,
        before: Option<Json>,
        after: Option<Json>,
    },
    /// Tables emptied by `TRUNCATE`.
    Truncate { tables: Vec<String> },
    /// The transaction is complete; `end` is the LSN to confirm once it was delivered.
    Commit { end: u64 },
    /// The server's keepalive: everything up to `end` was sent; `reply` asks for a status.
    Keepalive { end: u64, reply: bool },
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL timestamp; `None` outside what a time can hold.
fn pg_time(micros: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_micros(micros.checked_add(PG_EPOCH_MICROS)?)
}

fn cstr(body: &mut Bytes) -> Result<String, PgError> {
    let end = body
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| PgError::new("pgoutput: a name without its end"))?;
    let text = String::from_utf8_lossy(&body[..end]).into_owned();
    body.advance(end + 1);
    Ok(text)
}

fn need(body: &Bytes, n: usize) -> Result<(), PgError> {
    if body.remaining() < n {
        return Err(PgError::new("a message from the server ended early"));
    }
    Ok(())
}

impl Stream {
    /// The next event, waiting at most `wait`; `None` when nothing came meanwhile.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Event>, PgError> {
        loop {
            let message = match tokio::time::timeout(wait, self.connection.read()).await {
                Err(_) => return Ok(None),
                Ok(message) => message?,
            };
            match message.tag {
                b'd' => {}
                b'c' => return Err(PgError::new("the server ended the replication")),
                _ => continue,
            }
            let mut data = message.body;
            need(&data, 1)?;
            match data.get_u8() {
                b'k' => {
                    need(&data, 17)?;
                    let end = data.get_u64();
                    let _time = data.get_i64();
                    let reply = data.get_u8() == 1;
                    return Ok(Some(Event::Keepalive { end, reply }));
                }
                b'w' => {
                    need(&data, 24)?;
                    data.advance(24);
                    if let Some(event) = self.decode(data)? {
                        return Ok(Some(event));
                    }
                }
                _ => {}
            }
        }
    }

    /// Tells the server everything up to `lsn` is done with, so it may let that WAL go.
    pub async fn confirm(&mut self, lsn: u64) -> Result<(), PgError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
            - PG_EPOCH_MICROS;
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(lsn); // written
        payload.put_u64(lsn); // flushed
        payload.put_u64(lsn); // applied
        payload.put_i64(now);
        payload.put_u8(0);
        let mut out = BytesMut::with_capacity(40);
        out.put_u8(b'd');
        out.put_u32(4 + payload.len() as u32);
        out.extend_from_slice(&payload);
        self.connection.io.write_all(&out).await?;
        self.connection.io.flush().await?;
        Ok(())
    }

    /// One pgoutput message; `None` for those that carry nothing to deliver.
    fn decode(&mut self, mut data: Bytes) -> Result<Option<Event>, PgError> {
        need(&data, 1)?;
        let kind = data.get_u8();
        Ok(match kind {
            b'B' => {
                need(&data, 20)?;
                let lsn = data.get_u64();
                let time = data.get_i64();
                let xid = data.get_u32();
                Some(Event::Begin {
                    lsn,
                    xid,
                    commit_time: pg_time(time),
                })
            }
            b'C' => {
                need(&data, 25)?;
                let _flags = data.get_u8();
                let _commit = data.get_u64();
                let end = data.get_u64();
                Some(Event::Commit { end })
            }
            b'R' => {
                need(&data, 4)?;
                let oid = data.get_u32();
                let schema = cstr(&mut data)?;
                let table = cstr(&mut data)?;
                need(&data, 3)?;
                let _identity = data.get_u8();
                let count = data.get_u16();
                let mut columns = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    need(&data, 1)?;
                    let key = data.get_u8() & 1 == 1;
                    let name = cstr(&mut data)?;
                    need(&data, 8)?;
                    let type_oid = data.get_u32();
                    let _modifier = data.get_i32();
                    columns.push((name, type_oid, key));
                }
                self.relations.insert(
                    oid,
                    Relation {
                        schema,
                        table,
                        columns,
                    },
                );
                None
            }
            b'I' | b'U' | b'D' => {
                need(&data, 4)?;
                let oid = data.get_u32();
                let relation = self.relations.get(&oid).ok_or_else(|| {
                    PgError::new(format!(
                        "pgoutput: a change to table {oid}, never described"
                    ))
                })?;
                let mut before = None;
                let mut after = None;
                loop {
                    if !data.has_remaining() {
                        break;
                    }
                    match data.get_u8() {
                        b'N' => after = Some(tuple(relation, &mut data, false)?),
                        // The old key: the other columns come as nulls that are not values.
                        b'K' => before = Some(tuple(relation, &mut data, true)?),
                        b'O' => before = Some(tuple(relation, &mut data, false)?),
                        other => {
                            return Err(PgError::new(format!(
                                "pgoutput: unknown tuple kind {other}"
                            )));
                        }
                    }
                }
                Some(Event::Change {
                    op: match kind {
                        b'I' => "insert",
                        b'U' => "update",
                        _ => "delete",
                    },
                    schema: relation.schema.clone(),
                    table: relation.table.clone(),
                    before,
                    after,
                })
            }
            b'T' => {
                need(&data, 5)?;
                let count = data.get_u32();
                let _options = data.get_u8();
                let mut tables = Vec::new();
                for _ in 0..count {
                    need(&data, 4)?;
                    let oid = data.get_u32();
                    if let Some(r) = self.relations.get(&oid) {
                        tables.push(format!("{}.{}", r.schema, r.table));
                    }
                }
                Some(Event::Truncate { tables })
            }
            // Types, origins, logical messages: nothing to deliver.
            _ => None,
        })
    }
}

/// A row as pgoutput sends it (every value as text), as an object by column name: with
/// `key_only`, its key columns alone. A large value an update left unchanged is not sent, and
/// is left out.
fn tuple(relation: &Relation, data: &mut Bytes, key_only: bool) -> Result<Json, PgError> {
    need(data, 2)?;
    let count = data.get_u16() as usize;
    let mut object = serde_json::Map::with_capacity(count);
    for i in 0..count {
        need(data, 1)?;
        let (name, type_oid, key) = relation
            .columns
            .get(i)
            .ok_or_else(|| PgError::new("pgoutput: more values than columns"))?;
        match data.get_u8() {
            b'n' if key_only && !key => {}
            b'n' => {
                object.insert(name.clone(), Json::Null);
            }
            b'u' => {}
            b't' | b'b' => {
                need(data, 4)?;
                let len = data.get_u32() as usize;
                need(data, len)?;
                let text = data.split_to(len);
                object.insert(
                    name.clone(),
                    value_of(*type_oid, &String::from_utf8_lossy(&text)),
                );
            }
            other => {
                return Err(PgError::new(format!(
                    "pgoutput: unknown value kind {other}"
                )));
            }
        }
    }
    Ok(Json::Object(object))
}

/// A column's text as the JSON value `sql_poll` would give for it: numbers, booleans, JSON
/// as values, times in RFC 3339, `bytea` as base64, anything else as its text.
fn value_of(type_oid: u32, text: &str) -> Json {
    let as_text = || Json::String(text.to_string());
    match type_oid {
        16 => Json::Bool(text == "t"),
        20 | 21 | 23 | 26 => text.parse::<i64>().map_or_else(|_| as_text(), Json::from),
        700 | 701 => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(|f| serde_json::Number::from_f64(f).map(Json::Number))
            .unwrap_or_else(as_text),
        1700 => <rust_decimal::Decimal as std::str::FromStr>::from_str(text)
            .map_or_else(|_| as_text(), super::sql::decimal),
        114 | 3802 => serde_json::from_str(text).unwrap_or_else(|_| as_text()),
        17 => match text.strip_prefix("\\x").map(hex_bytes) {
            Some(Some(bytes)) => super::sql::to_base64(&bytes),
            _ => as_text(),
        },
        // timestamptz: `2026-12-06 02:00:00.5+00` (DateStyle ISO, TimeZone UTC).
        1184 => chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
            .map(|t| {
                Json::from(
                    t.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )
            })
            .unwrap_or_else(|_| as_text()),
        1114 => chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .map(|t| Json::from(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()))
            .unwrap_or_else(|_| as_text()),
        _ => as_text(),
    }
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_text_becomes_the_values_sql_poll_gives() {
        assert_eq!(value_of(23, "42"), Json::from(42));
        assert_eq!(value_of(16, "t"), Json::Bool(true));
        assert_eq!(value_of(1700, "12.50"), Json::from(12.5));
        assert_eq!(
            value_of(1700, "12345678901234567890.1"),
            Json::from("12345678901234567890.1")
        );
        assert_eq!(
            value_of(3802, r#"{"a": [1]}"#),
            serde_json::json!({"a": [1]})
        );
        assert_eq!(value_of(17, "\\x00ff80"), Json::from("AP+A"));
        assert_eq!(
            value_of(1184, "2026-12-06 02:00:00.5+00"),
            Json::from("2026-12-06T02:00:00.500Z")
        );
        assert_eq!(
            value_of(1114, "2026-12-06 02:00:00"),
            Json::from("2026-12-06T02:00:00")
        );
        assert_eq!(value_of(701, "NaN"), Json::from("NaN"));
        assert_eq!(value_of(25, "plain"), Json::from("plain"));
    }

    #[test]
    fn lsns_are_written_as_postgresql_writes_them() {
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(lsn_text(0), "0/0");
    }

    #[test]
    fn a_url_without_a_password_or_database_takes_the_defaults() {
        let t = Target::from_url("postgres://weft@db.internal").unwrap();
        assert_eq!(
            (t.user.as_str(), t.database.as_str(), t.port),
            ("weft", "weft", 5432)
        );
        // `prefer`, libpq's default: TLS when the server offers it.
        assert!(t.password.is_none() && t.tls.is_some() && !t.tls_required);
        let required = Target::from_url("postgres://u:p@h/d?sslmode=require").unwrap();
        assert!(required.tls.is_some() && required.tls_required);
        assert!(
            Target::from_url("postgres://u@h/d?sslmode=disable")
                .unwrap()
                .tls
                .is_none()
        );
        let e = Target::from_url("postgres://u:hunter2@h/d?sslmode=sometimes")
            .err()
            .unwrap();
        assert!(!e.contains("hunter2"));
    }
}
