use herald_core::webhook::Status;
use herald_webhooks::Settings;

use crate::support::{Harness, Receiver, Reply, settings};

#[tokio::test]
async fn private_targets_are_refused() {
    let rx = Receiver::always(Reply::status(200)).await;
    let h = Harness::start(Settings {
        allow_private_targets: false,
        retry_schedule: vec![],
        ..settings()
    });
    let port = rx.port;
    let cases = [
        (
            format!("http://127.0.0.1:{port}/hook"),
            "refused: 127.0.0.1 is a loopback address (webhooks.allow_private_targets = false)"
                .to_owned(),
        ),
        (
            format!("http://localhost:{port}/hook"),
            "refused: localhost resolves only to forbidden addresses: ".to_owned(),
        ),
        (
            format!("http://[::1]:{port}/hook"),
            "refused: ::1 is a loopback address".to_owned(),
        ),
        (
            format!("http://[::ffff:7f00:1]:{port}/hook"),
            "refused: ::ffff:127.0.0.1 is a loopback address".to_owned(),
        ),
        (
            format!("http://2130706433:{port}/hook"),
            "refused: 127.0.0.1 is a loopback address".to_owned(),
        ),
    ];
    let mut endpoints = Vec::new();
    for (url, _) in &cases {
        let ep = h.endpoint(url, |_| {}).await;
        h.publish(&ep, 1).await;
        endpoints.push(ep);
    }
    for (ep, (url, want)) in endpoints.iter().zip(&cases) {
        let d = h.settled(ep, 1).await;
        assert_eq!(d[0].delivery.status, Status::Failed, "{url}");
        let a = &d[0].attempts[0];
        assert_eq!(a.status_code, None);
        let error = a.error.as_deref().unwrap();
        assert!(error.starts_with(want.as_str()), "{url}: {error}");
        assert!(
            error.ends_with("(webhooks.allow_private_targets = false)"),
            "{url}: {error}"
        );
    }
    assert_eq!(rx.count(), 0, "nothing reached the private receiver");
    h.stop().await;
}

#[tokio::test]
async fn unusable_urls_are_failed_attempts() {
    let h = Harness::start(Settings {
        retry_schedule: vec![],
        ..settings()
    });
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (url, want) in [
        (
            "ftp://example.com/hook".to_owned(),
            "unsupported url scheme `ftp`",
        ),
        ("not a url".to_owned(), "invalid url"),
        (
            format!("http://127.0.0.1:{closed}/hook"),
            "connection failed: tcp connect error: ",
        ),
    ] {
        let ep = h.endpoint(&url, |_| {}).await;
        h.publish(&ep, 1).await;
        let d = h.settled(&ep, 1).await;
        assert_eq!(d[0].delivery.status, Status::Failed);
        let error = d[0].attempts[0].error.as_deref().unwrap();
        assert!(error.starts_with(want), "{url}: {error}");
    }
    h.stop().await;
}
