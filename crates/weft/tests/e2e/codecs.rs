//! Body codecs end to end: a multipart upload (written by curl) decoded by `http_server`, and
//! messages sent as form, XML, CSV and multipart bodies by `http_client`'s `format` (or its
//! `Content-Type` header).

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_decoded_and_bodies_are_written_in_the_chosen_format() {
    let receiver = Receiver::start().await;
    let (upload, xml_in, csv_in, multi_in, raw_in) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let config = format!(
        r#"
flows:
  upload:
    input:
      http_server: {{ address: "127.0.0.1:{upload}", errors: detailed }}
    pipeline:
      - map: |
          . = {{ "title": .title, "tags": .tag, "file": .doc.filename, "type": .doc.content_type, "text": .doc.content }}
    output:
      http_client: {{ url: "{form}", headers: {{ Content-Type: application/x-www-form-urlencoded }} }}
  xml:
    input:
      http_server: {{ address: "127.0.0.1:{xml_in}", errors: detailed }}
    output:
      http_client: {{ url: "{xml}", format: xml }}
  csv:
    input:
      http_server: {{ address: "127.0.0.1:{csv_in}", errors: detailed }}
    output:
      http_client: {{ url: "{csv}", headers: {{ Content-Type: text/csv }} }}
  raw:
    input:
      http_server: {{ address: "127.0.0.1:{raw_in}", errors: detailed }}
    pipeline:
      - map: '. = "<note>" + string!(.t) + "</note>"'
    output:
      http_client: {{ url: "{raw}", headers: {{ Content-Type: text/xml }} }}
  multi:
    input:
      http_server: {{ address: "127.0.0.1:{multi_in}", errors: detailed }}
    output:
      http_client: {{ url: "{multi}", format: multipart }}
"#,
        form = receiver.url("/form"),
        xml = receiver.url("/xml"),
        csv = receiver.url("/csv"),
        multi = receiver.url("/multi"),
        raw = receiver.url("/raw"),
    );
    let weft = Weft::start(&config).await;

    // curl writes the multipart body: two values of one field, a text field and a file.
    let dir = scratch();
    std::fs::write(dir.join("notes.txt"), "line one\nline two & more").unwrap();
    let url = format!("http://127.0.0.1:{upload}/");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-F", "title=Q3 report", "-F", "tag=a", "-F", "tag=b"])
            .arg("-F")
            .arg(format!(
                "doc=@{};type=text/plain",
                dir.join("notes.txt").display()
            ))
            .arg(&url)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("\"id\""),
        "{} {} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        weft.stderr()
    );
    let form = &receiver.seen()[0];
    assert_eq!(
        form.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(form.body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    for expected in [
        pair("title", "Q3 report"),
        pair("tags", "a"),
        pair("tags", "b"),
        pair("file", "notes.txt"),
        pair("type", "text/plain"),
        pair("text", "line one\nline two & more"),
    ] {
        assert!(pairs.contains(&expected), "{expected:?} in {pairs:?}");
    }

    // An order as XML: attributes, repeated elements, escaping, an empty element; fields in
    // name order, as VRL keeps them.
    let order = r#"{"order": {"@id": "7", "customer": "Ada & Co", "line": [{"sku": "A1", "qty": 2}, {"sku": "B<2>", "qty": 1}], "note": null}}"#;
    let (status, _, body) = post_json(&format!("http://127.0.0.1:{xml_in}/"), order).await;
    assert_eq!(status, 200, "{body}");
    let xml = receiver
        .seen()
        .into_iter()
        .find(|s| s.path == "/xml")
        .unwrap();
    assert_eq!(xml.headers["content-type"], "application/xml");
    assert_eq!(
        xml.body,
        r#"<?xml version="1.0" encoding="UTF-8"?><order id="7"><customer>Ada &amp; Co</customer><line><qty>2</qty><sku>A1</sku></line><line><qty>1</qty><sku>B&lt;2&gt;</sku></line><note/></order>"#
    );
    // A value XML cannot hold fails for good, naming why.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{xml_in}/"),
        r#"{"a": 1, "b": 2}"#,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("exactly one field (the root element)"),
        "{body}"
    );

    // Rows as CSV with a header row of every column seen.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{csv_in}/"),
        r#"[{"sku": "A1", "qty": 2}, {"sku": "B,2", "qty": 1, "note": "x"}]"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let csv = receiver
        .seen()
        .into_iter()
        .find(|s| s.path == "/csv")
        .unwrap();
    assert_eq!(csv.headers["content-type"], "text/csv");
    assert_eq!(csv.body, "qty,sku,note\n2,A1,\n1,\"B,2\",x\n");

    // A string under a header-chosen format is already written: sent as it is.
    let (status, _, body) =
        post_json(&format!("http://127.0.0.1:{raw_in}/"), r#"{"t": "hi"}"#).await;
    assert_eq!(status, 200, "{body}");
    let raw = receiver
        .seen()
        .into_iter()
        .find(|s| s.path == "/raw")
        .unwrap();
    assert_eq!(raw.headers["content-type"], "text/xml");
    assert_eq!(raw.body, "<note>hi</note>");

    // Multipart: a text part, a JSON part and a file part, read back by multer.
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{multi_in}/"),
        r#"{"n": 3, "meta": {"k": [1]}, "doc": {"filename": "a.txt", "content_type": "text/plain", "content": "hello\r\n--x"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let multi = receiver
        .seen()
        .into_iter()
        .find(|s| s.path == "/multi")
        .unwrap();
    let content_type = multi.headers["content-type"].to_str().unwrap().to_string();
    let boundary = multer::parse_boundary(&content_type).unwrap();
    let body = bytes::Bytes::from(multi.body.clone());
    let mut parts = multer::Multipart::new(
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) }),
        boundary,
    );
    let mut got = Vec::new();
    while let Some(field) = parts.next_field().await.unwrap() {
        got.push((
            field.name().unwrap_or("").to_string(),
            field.file_name().map(str::to_string),
            field.content_type().map(|m| m.to_string()),
            String::from_utf8(field.bytes().await.unwrap().to_vec()).unwrap(),
        ));
    }
    let s = |t: &str| Some(t.to_string());
    assert_eq!(
        got,
        [
            (
                "doc".into(),
                s("a.txt"),
                s("text/plain"),
                "hello\r\n--x".into()
            ),
            (
                "meta".into(),
                None,
                s("application/json"),
                r#"{"k":[1]}"#.into()
            ),
            ("n".into(), None, None, "3".into()),
        ]
    );
}
