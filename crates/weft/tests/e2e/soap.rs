//! SOAP against a real local SOAP endpoint: envelopes from templates (1.1 and 1.2), the answer's
//! Body as a value, Faults as failures with code and reason, DTDs refused.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

#[derive(Clone, Debug)]
struct Call {
    content_type: String,
    action: Option<String>,
    body: String,
}

async fn soap_server() -> (String, Arc<Mutex<Vec<Call>>>) {
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/soap", listener.local_addr().unwrap());
    let c = calls.clone();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let c = c.clone();
        async move {
            let (parts, body) = request.into_parts();
            let header = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            let content_type = header("content-type").unwrap_or_default();
            let action = header("soapaction");
            let body = body.collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            c.lock().unwrap().push(Call {
                content_type,
                action,
                body: body.clone(),
            });
            let xml = |status: StatusCode, text: String| {
                (status, [("content-type", "text/xml")], text).into_response()
            };
            if body.contains("<Id>oneway</Id>") {
                return StatusCode::ACCEPTED.into_response();
            }
            let flaky_calls = c
                .lock()
                .unwrap()
                .iter()
                .filter(|call| call.body.contains("<Id>flaky</Id>"))
                .count();
            if body.contains("<Id>flaky</Id>") && flaky_calls == 1 {
                return xml(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Server.Timeout</faultcode><faultstring>try again</faultstring></s:Fault></s:Body></s:Envelope>"#.into(),
                );
            }
            if body.contains("<Id>down</Id>") {
                return xml(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Server</faultcode><faultstring>database offline</faultstring></s:Fault></s:Body></s:Envelope>"#.into(),
                );
            }
            if body.contains("<Id>bad</Id>") {
                return xml(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>Unknown product</faultstring></s:Fault></s:Body></s:Envelope>"#.into(),
                );
            }
            if body.contains("<Id>dtd</Id>") {
                return xml(
                    StatusCode::OK,
                    r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><s:Envelope xmlns:s="x"><s:Body>&a;</s:Body></s:Envelope>"#.into(),
                );
            }
            if body.contains("GetCustomer") {
                return xml(
                    StatusCode::OK,
                    r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><GetCustomerResponse xmlns="urn:erp"><Customer tier="gold"><Name>Ada &amp; Co</Name></Customer></GetCustomerResponse></env:Body></env:Envelope>"#.into(),
                );
            }
            xml(
                StatusCode::OK,
                r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><CreateOrderResponse><OrderId>42</OrderId></CreateOrderResponse></soap:Body></soap:Envelope>"#.into(),
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_per_message_with_faults_and_dtds_failing_it() {
    let (api, calls) = soap_server().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    output:
      soap:
        url: "{api}"
        action: urn:CreateOrder
        body: '<CreateOrder xmlns="urn:erp"><Id>{{{{ id }}}}</Id><Total>{{{{ total }}}}</Total><Paid>{{{{ paid }}}}</Paid></CreateOrder>'
        retry: {{ max_attempts: 2, initial_backoff: 10ms }}
"#
    );
    let weft = Weft::start(&config).await;
    let url = format!("http://127.0.0.1:{port}/");
    let (status, _, body) = post_json(&url, r#"{"id": "A<1>&", "total": 5, "paid": true}"#).await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let call = calls.lock().unwrap()[0].clone();
    assert_eq!(call.content_type, "text/xml; charset=utf-8");
    assert_eq!(call.action.as_deref(), Some("\"urn:CreateOrder\""));
    assert!(
        call.body.contains("<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><CreateOrder xmlns=\"urn:erp\"><Id>A&lt;1&gt;&amp;</Id><Total>5</Total><Paid>true</Paid>"),
        "{}",
        call.body
    );

    // A client fault is not retried; its code and reason are the failure.
    let (status, _, body) = post_json(&url, r#"{"id": "bad", "total": 1, "paid": false}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("SOAP Fault s:Client: Unknown product"),
        "{body}"
    );
    assert_eq!(calls.lock().unwrap().len(), 2);

    // A server fault (1.1's dotted `Server.Timeout` too) is retried; a one-way 202 with no body
    // is delivered.
    let (status, _, body) = post_json(&url, r#"{"id": "flaky", "total": 1, "paid": false}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(calls.lock().unwrap().len(), 4);
    let (status, _, body) = post_json(&url, r#"{"id": "oneway", "total": 1, "paid": false}"#).await;
    assert_eq!(status, 200, "{body}");

    // An answer with a DTD is refused, not expanded.
    let (status, _, body) = post_json(&url, r#"{"id": "dtd", "total": 1, "paid": false}"#).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("DTD"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soap_1_2_answer_enriches_the_message() {
    let (api, calls) = soap_server().await;
    let receiver = Receiver::start().await;
    let port = free_port();
    let config = format!(
        r#"
flows:
  orders:
    input:
      http_server: {{ address: "127.0.0.1:{port}", errors: detailed }}
    pipeline:
      - soap:
          url: "{api}"
          version: "1.2"
          action: urn:GetCustomer
          body: '<GetCustomer xmlns="urn:erp"><Id>{{{{ customer_id }}}}</Id></GetCustomer>'
          result: .customer = %response.body.GetCustomerResponse.Customer
          retry: {{ max_attempts: 2, initial_backoff: 10ms }}
    output:
      http_client: {{ url: "{out}" }}
"#,
        out = receiver.url("/out")
    );
    let weft = Weft::start(&config).await;
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"customer_id": 7}"#,
    )
    .await;
    assert_eq!(status, 200, "{body} {}", weft.stderr());
    let call = calls.lock().unwrap()[0].clone();
    assert_eq!(
        call.content_type,
        "application/soap+xml; charset=utf-8; action=\"urn:GetCustomer\""
    );
    assert!(call.action.is_none());
    assert!(
        call.body
            .contains("http://www.w3.org/2003/05/soap-envelope")
    );
    assert_eq!(
        receiver.seen()[0].json(),
        serde_json::json!({"customer_id": 7, "customer": {"@tier": "gold", "Name": "Ada & Co"}})
    );

    // A server fault that outlasts the retries: the service failed, 502 (not the caller's 422).
    let before = calls.lock().unwrap().len();
    let (status, _, body) = post_json(
        &format!("http://127.0.0.1:{port}/"),
        r#"{"customer_id": "down"}"#,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("SOAP Fault s:Server: database offline"),
        "{body}"
    );
    assert_eq!(calls.lock().unwrap().len(), before + 2, "retried once");
}
