//! The embedded MQTT broker (edgepod::fleet::mqtt::broker) against real clients:
//! mosquitto_sub / mosquitto_pub (Debian's mosquitto-clients) as an independent implementation,
//! rumqttc as the fleet link's own client, and raw packets through rumqttc's codec where a test
//! must misbehave (never acknowledge, send garbage, go silent).
//!
//! "Never receives" is asserted with a sentinel: the forbidden message is published first, then
//! one the client must get; the broker routes a QoS 1 publish before acknowledging it and keeps
//! each subscriber's queue in order, so once the sentinel is in, the forbidden one would be too.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edgepod::fleet::mqtt::broker::{self, Broker, BrokerConfig, FleetAcl, HUB_USERNAME};
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, LastWill, Packet, Publish};
use rumqttc::mqttbytes::v4::{PubAck, Subscribe, SubscribeReasonCode};
use rumqttc::{AsyncClient, Event, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const MAX_PACKET: usize = 2 * 1024 * 1024;

async fn start(configure: impl FnOnce(&mut BrokerConfig)) -> Broker {
    let mut cfg = BrokerConfig::new((Ipv4Addr::LOCALHOST, 0).into());
    configure(&mut cfg);
    broker::start(cfg).await.expect("broker starts")
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- mosquitto-clients

/// A running mosquitto_sub (-v -d, line-buffered) and every line it printed.
struct Sub {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    fn spawn(port: u16, args: &[&str]) -> Sub {
        Self::spawn_with(&["-h", "127.0.0.1", "-p", &port.to_string()], args)
    }

    fn spawn_with(conn: &[&str], args: &[&str]) -> Sub {
        // stdbuf: mosquitto_sub flushes after messages only; -d lines would sit in its buffer.
        let mut child = tokio::process::Command::new("stdbuf")
            .arg("-oL")
            .arg("mosquitto_sub")
            .args(conn)
            .args(["-v", "-d"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub runs (Debian package mosquitto-clients)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for pipe in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Sub { child, lines }
    }

    fn has(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }

    fn has_containing(&self, part: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(part))
    }

    fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    async fn wait(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has(line) {
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub never printed {line:?}; it printed:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The granted QoS (or 128) mosquitto_sub reports for its subscription(s).
    async fn subscribed(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with("Subscribed (mid: 1): "))
            {
                return l.trim_start_matches("Subscribed (mid: 1): ").to_string();
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub never subscribed; it printed:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Message lines ("topic payload"), without -d's protocol chatter.
    fn messages(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed "))
            .cloned()
            .collect()
    }

    /// SIGKILL: no DISCONNECT, the broker sees the socket close.
    fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
    }

    async fn exited(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("mosquitto_sub exits")
            .expect("wait")
    }
}

/// mosquitto_pub to the broker; returns (success, stderr).
async fn mpub(port: u16, args: &[&str]) -> (bool, String) {
    mpub_with(&["-h", "127.0.0.1", "-p", &port.to_string()], args).await
}

async fn mpub_with(conn: &[&str], args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new("mosquitto_pub")
            .args(conn)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_pub finishes")
    .expect("mosquitto_pub runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn mpub_ok(port: u16, args: &[&str]) {
    let (ok, err) = mpub(port, args).await;
    assert!(ok, "mosquitto_pub {args:?} failed: {err}");
}

// ---------------------------------------------------------------- rumqttc

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o
}

/// A rumqttc client whose event loop runs in a task, stopping at the first error (no
/// reconnecting behind the test's back).
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn connect(opts: MqttOptions) -> (Client, ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(e) => {
                        if tx.send(Ok(e)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut c = Client {
            client,
            events,
            task,
        };
        let ack = loop {
            match c.next_event(10).await {
                Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => break ack,
                Some(Ok(_)) => {}
                other => panic!("no CONNACK: {other:?}"),
            }
        };
        (c, ack)
    }

    async fn next_event(&mut self, secs: u64) -> Option<Result<Event, String>> {
        tokio::time::timeout(Duration::from_secs(secs), self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next PUBLISH within `secs`, or None.
    async fn next_publish(&mut self, secs: u64) -> Option<Publish> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()
                .flatten()?;
            match e {
                Ok(Event::Incoming(Packet::Publish(p))) => return Some(p),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        loop {
            match self.next_event(10).await {
                Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => return ack.return_codes[0],
                Some(Ok(_)) => {}
                other => panic!("no SUBACK: {other:?}"),
            }
        }
    }

    /// Publishes and waits for the PUBACK (QoS 1).
    async fn publish1(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .expect("publish");
        loop {
            match self.next_event(10).await {
                Some(Ok(Event::Incoming(Packet::PubAck(_)))) => return,
                Some(Ok(_)) => {}
                other => panic!("no PUBACK: {other:?}"),
            }
        }
    }

    /// DISCONNECT, then wait for the connection to close.
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if e.is_err() {
                break;
            }
        }
        self.task.abort();
    }

    /// Drops the socket without DISCONNECT.
    fn kill(self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- raw packets

enum Recv {
    Packet(Packet),
    /// Bytes that are not MQTT (a TLS alert on the TLS port).
    NotMqtt,
    Closed,
    Timeout,
}

impl std::fmt::Debug for Recv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recv::Packet(p) => write!(f, "Packet({p:?})"),
            Recv::NotMqtt => f.write_str("NotMqtt"),
            Recv::Closed => f.write_str("Closed"),
            Recv::Timeout => f.write_str("Timeout"),
        }
    }
}

/// A client written with the codec by hand, free to break the protocol.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn open(port: u16) -> Raw {
        Raw {
            s: TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .expect("connect"),
            buf: BytesMut::new(),
        }
    }

    async fn connect(port: u16, c: Connect) -> (Raw, ConnAck) {
        let mut raw = Raw::open(port).await;
        raw.send(Packet::Connect(c)).await;
        match raw.recv(5.0).await {
            Recv::Packet(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("no CONNACK: {other:?}"),
        }
    }

    async fn send(&mut self, p: Packet) {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).expect("encode");
        self.s.write_all(&b).await.expect("write");
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        // The broker may already have closed on an earlier part: that is fine here.
        let _ = self.s.write_all(bytes).await;
    }

    async fn recv(&mut self, secs: f64) -> Recv {
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        loop {
            match Packet::read(&mut self.buf, usize::MAX) {
                Ok(p) => return Recv::Packet(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(_) => return Recv::NotMqtt,
            }
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Recv::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn connect_packet(id: &str, clean: bool, keep_alive: u16) -> Connect {
    let mut c = Connect::new(id);
    c.clean_session = clean;
    c.keep_alive = keep_alive;
    c
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_with_wildcards_across_client_implementations() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    let plus = Sub::spawn(port, &["-q", "1", "-t", "a/+/c"]);
    let hash = Sub::spawn(port, &["-q", "1", "-t", "a/#"]);
    assert_eq!(plus.subscribed().await, "1");
    assert_eq!(hash.subscribed().await, "1");
    let (mut rq, ack) = Client::connect(options("rq-sub", port)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(!ack.session_present);
    assert_eq!(
        rq.subscribe("+/b/#", QoS::AtLeastOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    // QoS 2 is granted as QoS 1.
    assert_eq!(
        rq.subscribe("z/#", QoS::ExactlyOnce).await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    mpub_ok(port, &["-q", "1", "-t", "b/c", "-m", "nobody"]).await;
    mpub_ok(port, &["-q", "1", "-t", "a/x", "-m", "hash-only"]).await;
    mpub_ok(port, &["-q", "0", "-t", "a/b/c", "-m", "everyone"]).await;
    // QoS 2 from mosquitto_pub completes its exchange and arrives as QoS 1.
    mpub_ok(port, &["-q", "2", "-t", "z/q2", "-m", "two"]).await;

    plus.wait("a/b/c everyone").await;
    hash.wait("a/b/c everyone").await;
    assert_eq!(plus.messages(), ["a/b/c everyone"]);
    assert_eq!(hash.messages(), ["a/x hash-only", "a/b/c everyone"]);
    let p = rq.next_publish(5).await.expect("a/b/c for +/b/#");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("a/b/c", &b"everyone"[..])
    );
    assert_eq!(p.qos, QoS::AtMostOnce, "QoS 0 stays 0");
    let p = rq.next_publish(5).await.expect("z/q2");
    assert_eq!((p.topic.as_str(), p.qos), ("z/q2", QoS::AtLeastOnce));

    // UNSUBSCRIBE: a/b/c no longer reaches rumqttc; z/# still does.
    rq.client.unsubscribe("+/b/#").await.expect("unsubscribe");
    loop {
        match rq.next_event(10).await {
            Some(Ok(Event::Incoming(Packet::UnsubAck(_)))) => break,
            Some(Ok(_)) => {}
            other => panic!("no UNSUBACK: {other:?}"),
        }
    }
    mpub_ok(port, &["-q", "1", "-t", "a/b/c", "-m", "after-unsubscribe"]).await;
    mpub_ok(port, &["-q", "1", "-t", "z/sentinel", "-m", "s"]).await;
    let p = rq.next_publish(5).await.expect("z/sentinel");
    assert_eq!(p.topic, "z/sentinel", "nothing for the dropped filter");

    // rumqttc publisher → mosquitto_sub, a payload over rumqttc's default 10 KiB limit.
    let big = vec![b'x'; 100 * 1024];
    rq.publish1("a/big/c", &big, false).await;
    let line = format!("a/big/c {}", String::from_utf8_lossy(&big));
    plus.wait(&line).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_reach_late_subscribers_until_cleared() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    mpub_ok(port, &["-q", "1", "-r", "-t", "r/one", "-m", "kept"]).await;
    mpub_ok(port, &["-q", "1", "-r", "-t", "r/two", "-m", "also"]).await;
    assert_eq!(b.stats().retained, 2);

    let late = Sub::spawn(port, &["-q", "1", "-t", "r/#"]);
    late.wait("r/one kept").await;
    late.wait("r/two also").await;
    assert!(
        late.has_containing("r1,"),
        "sent with RETAIN set:\n{}",
        late.dump()
    );
    // A live subscriber gets later retained publishes with RETAIN 0 (§3.3.1.3).
    mpub_ok(port, &["-q", "1", "-r", "-t", "r/one", "-m", "newer"]).await;
    late.wait("r/one newer").await;
    assert!(late.has_containing("r0, m"), "{}", late.dump());

    // An empty retained publish clears the topic.
    mpub_ok(port, &["-q", "1", "-r", "-t", "r/one", "-n"]).await;
    wait_until("r/one cleared", 5, || b.stats().retained == 1).await;
    let (mut rq, _) = Client::connect(options("late-rq", port)).await;
    rq.subscribe("r/one", QoS::AtLeastOnce).await;
    rq.subscribe("r/two", QoS::AtLeastOnce).await;
    let p = rq.next_publish(5).await.expect("r/two still retained");
    assert_eq!(p.topic, "r/two");
    assert!(p.retain);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();

    // rumqttc, clean_session=false.
    let mut opts = options("keeper", port);
    opts.set_clean_session(false);
    let (mut c, ack) = Client::connect(opts.clone()).await;
    assert!(!ack.session_present);
    c.subscribe("q/#", QoS::AtLeastOnce).await;
    c.disconnect().await;
    // mosquitto_sub, -c.
    let mut ms = Sub::spawn(port, &["-c", "-i", "ms-keeper", "-q", "1", "-t", "q/#"]);
    ms.subscribed().await;
    ms.kill9();
    ms.exited().await;
    wait_until("both clients gone, their sessions kept", 10, || {
        let s = b.stats();
        s.connected == 0 && s.sessions == 2
    })
    .await;

    for n in 1..=3 {
        mpub_ok(
            port,
            &["-q", "1", "-t", &format!("q/{n}"), "-m", &format!("m{n}")],
        )
        .await;
    }
    // The broker routes a publisher's messages after mosquitto_pub has exited: reconnecting
    // the keeper before q/zero is routed would (rightly) deliver it live. A live witness
    // seeing it proves it was routed while the keeper was away.
    let witness = Sub::spawn(port, &["-i", "witness", "-q", "0", "-t", "q/zero"]);
    witness.subscribed().await;
    mpub_ok(port, &["-q", "0", "-t", "q/zero", "-m", "not kept"]).await;
    witness.wait("q/zero not kept").await;

    let (mut c, ack) = Client::connect(opts).await;
    assert!(ack.session_present, "CONNACK says the session was kept");
    for n in 1..=3 {
        let p = c.next_publish(5).await.expect("queued message");
        assert_eq!(p.topic, format!("q/{n}"));
        assert_eq!(p.qos, QoS::AtLeastOnce);
    }
    // The subscription itself survived too.
    mpub_ok(port, &["-q", "1", "-t", "q/after", "-m", "live"]).await;
    let p = c.next_publish(5).await.expect("live message");
    assert_eq!(
        p.topic, "q/after",
        "QoS 0 was not queued for the offline session"
    );

    let again = Sub::spawn(port, &["-c", "-i", "ms-keeper", "-q", "1", "-t", "q/#"]);
    for n in 1..=3 {
        again.wait(&format!("q/{n} m{n}")).await;
    }
    again.wait("q/after live").await;
    assert!(!again.has("q/zero not kept"));

    // A clean session with the same id discards it.
    let (_c2, ack) = Client::connect(options("keeper", port)).await;
    assert!(!ack.session_present);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_qos1_is_sent_again_with_dup_after_reconnect() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    let (mut raw, _) = Raw::connect(port, connect_packet("forgetful", false, 60)).await;
    raw.send(Packet::Subscribe(Subscribe::new("d/#", QoS::AtLeastOnce)))
        .await;
    assert!(matches!(
        raw.recv(5.0).await,
        Recv::Packet(Packet::SubAck(_))
    ));
    mpub_ok(port, &["-q", "1", "-t", "d/x", "-m", "once"]).await;
    let first = match raw.recv(5.0).await {
        Recv::Packet(Packet::Publish(p)) => p,
        other => panic!("{other:?}"),
    };
    assert!(!first.dup);
    drop(raw); // no PUBACK, no DISCONNECT

    let (mut raw, ack) = Raw::connect(port, connect_packet("forgetful", false, 60)).await;
    assert!(ack.session_present);
    let again = match raw.recv(5.0).await {
        Recv::Packet(Packet::Publish(p)) => p,
        other => panic!("{other:?}"),
    };
    assert!(again.dup, "redelivery is flagged DUP");
    assert_eq!(again.pkid, first.pkid, "with its original packet id");
    assert_eq!(&again.payload[..], b"once");
    raw.send(Packet::PubAck(PubAck::new(again.pkid))).await;
    // Processed in order: once the PINGRESP is back, so is the PUBACK.
    raw.send(Packet::PingReq).await;
    assert!(matches!(
        raw.recv(5.0).await,
        Recv::Packet(Packet::PingResp)
    ));
    drop(raw);
    // Acknowledged now: a third connection gets nothing.
    let (mut raw, _) = Raw::connect(port, connect_packet("forgetful", false, 60)).await;
    assert!(matches!(raw.recv(0.5).await, Recv::Timeout));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_will_goes_out_on_a_lost_connection_only() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    let watcher = Sub::spawn(port, &["-q", "1", "-t", "will/#"]);
    watcher.subscribed().await;

    // mosquitto_sub SIGKILLed.
    let mut doomed = Sub::spawn(
        port,
        &[
            "-t",
            "x",
            "--will-topic",
            "will/ms",
            "--will-payload",
            "ms-gone",
            "--will-qos",
            "1",
        ],
    );
    doomed.subscribed().await;
    doomed.kill9();
    watcher.wait("will/ms ms-gone").await;

    // rumqttc with a retained Will, its socket dropped.
    let mut opts = options("rq-will", port);
    opts.set_last_will(LastWill::new("will/rq", "rq-gone", QoS::AtLeastOnce, true));
    let (c, _) = Client::connect(opts).await;
    c.kill();
    watcher.wait("will/rq rq-gone").await;
    // Retained as asked: a late subscriber sees it.
    let late = Sub::spawn(port, &["-q", "1", "-t", "will/rq"]);
    late.wait("will/rq rq-gone").await;

    // A clean DISCONNECT discards the Will: mosquitto_pub and rumqttc.
    mpub_ok(
        port,
        &[
            "-q",
            "1",
            "-t",
            "x",
            "-m",
            "1",
            "--will-topic",
            "will/clean-ms",
            "--will-payload",
            "no",
        ],
    )
    .await;
    let mut opts = options("rq-clean", port);
    opts.set_last_will(LastWill::new(
        "will/clean-rq",
        "no",
        QoS::AtLeastOnce,
        false,
    ));
    let (c, _) = Client::connect(opts).await;
    c.disconnect().await;
    mpub_ok(port, &["-q", "1", "-t", "will/sentinel", "-m", "end"]).await;
    watcher.wait("will/sentinel end").await;
    assert!(!watcher.has_containing("will/clean"), "{}", watcher.dump());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    let watcher = Sub::spawn(port, &["-q", "1", "-t", "ka/#"]);
    watcher.subscribed().await;

    let mut c = connect_packet("sleepy", true, 1);
    c.last_will = Some(LastWill::new("ka/will", "expired", QoS::AtLeastOnce, false));
    let started = Instant::now();
    let (mut raw, _) = Raw::connect(port, c).await;
    assert!(matches!(raw.recv(5.0).await, Recv::Closed));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "closed after {waited:?}, expected ~1.5 s"
    );
    watcher.wait("ka/will expired").await;

    // A client that pings stays.
    let (mut raw, _) = Raw::connect(port, connect_packet("awake", true, 1)).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        raw.send(Packet::PingReq).await;
        assert!(matches!(
            raw.recv(2.0).await,
            Recv::Packet(Packet::PingResp)
        ));
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    let watcher = Sub::spawn(port, &["-q", "1", "-t", "tk/#"]);
    watcher.subscribed().await;

    let mut first = connect_packet("twin", true, 60);
    first.last_will = Some(LastWill::new("tk/will", "first", QoS::AtLeastOnce, false));
    let (mut old, _) = Raw::connect(port, first).await;
    let (mut rq, ack) = Client::connect(options("twin", port)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(
        matches!(old.recv(5.0).await, Recv::Closed),
        "the old connection is closed"
    );
    // Mosquitto publishes the displaced connection's Will; so does this broker.
    watcher.wait("tk/will first").await;
    // The new one works.
    rq.subscribe("tk/#", QoS::AtLeastOnce).await;
    mpub_ok(port, &["-q", "1", "-t", "tk/x", "-m", "for-the-new-one"]).await;
    let p = rq
        .next_publish(5)
        .await
        .expect("delivered to the new connection");
    assert_eq!(&p.payload[..], b"for-the-new-one");
    // mosquitto_sub taking over from rumqttc.
    let ms = Sub::spawn(port, &["-i", "twin", "-q", "1", "-t", "tk/#"]);
    ms.subscribed().await;
    let mut closed = false;
    while let Some(e) = rq.next_event(5).await {
        if e.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "rumqttc's connection was closed by the takeover");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_the_connection_that_sent_it() {
    let b = start(|c| c.max_packet_size = 64 * 1024).await;
    let port = b.local_addr().port();
    let watcher = Sub::spawn(port, &["-q", "1", "-t", "g/#"]);
    watcher.subscribed().await;
    let (mut rq, _) = Client::connect(options("bystander", port)).await;
    rq.subscribe("g/#", QoS::AtLeastOnce).await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "junk before CONNECT",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a bad remaining length",
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
        ("reserved packet type 15", vec![0xf0, 0x00]),
    ];
    for (what, bytes) in cases {
        let mut raw = Raw::open(port).await;
        raw.send_bytes(&bytes).await;
        assert!(matches!(raw.recv(5.0).await, Recv::Closed), "{what}");
    }
    // After a good CONNECT: garbage, an invalid topic, an oversized packet, a server packet.
    let after_connect: Vec<(&str, Vec<u8>)> = vec![
        (
            "reserved packet type 0",
            vec![0x00, 0x00, 0xde, 0xad, 0xbe, 0xef],
        ),
        (
            "PUBLISH with QoS 3",
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
        ),
        (
            "PUBLISH to a wildcard topic",
            vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'],
        ),
        (
            "a packet over max_packet_size",
            vec![0x30, 0x80, 0x80, 0x10],
        ),
        ("a CONNACK from a client", vec![0x20, 0x02, 0x00, 0x00]),
        ("a truncated SUBSCRIBE", vec![0x82, 0x03, 0x00, 0x01, 0x00]),
    ];
    for (what, bytes) in after_connect {
        let (mut raw, _) = Raw::connect(port, connect_packet("vandal", true, 60)).await;
        raw.send_bytes(&bytes).await;
        assert!(matches!(raw.recv(5.0).await, Recv::Closed), "{what}");
    }
    // Everyone else is still served.
    mpub_ok(port, &["-q", "1", "-t", "g/ok", "-m", "still-here"]).await;
    watcher.wait("g/ok still-here").await;
    let p = rq.next_publish(5).await.expect("rumqttc still served");
    assert_eq!(&p.payload[..], b"still-here");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_for_bad_protocol_client_id_or_credentials() {
    struct OnlyAlice;
    impl broker::Authorizer for OnlyAlice {
        fn connect(&self, id: &broker::ClientIdentity, password: Option<&[u8]>) -> bool {
            id.username.as_deref() == Some("alice") && password == Some(b"secret".as_slice())
        }
        fn publish(&self, _: &broker::ClientIdentity, _: &str) -> bool {
            true
        }
        fn subscribe(&self, _: &broker::ClientIdentity, _: &str) -> bool {
            true
        }
    }
    let b = start(|c| c.authorizer = Arc::new(OnlyAlice)).await;
    let port = b.local_addr().port();
    let (ok, err) = mpub(
        port,
        &[
            "-V", "mqttv31", "-u", "alice", "-P", "secret", "-t", "x", "-m", "1",
        ],
    )
    .await;
    assert!(
        !ok && err.contains("unacceptable protocol version"),
        "{err}"
    );
    let (ok, err) = mpub(
        port,
        &[
            "-V", "mqttv5", "-u", "alice", "-P", "secret", "-t", "x", "-m", "1",
        ],
    )
    .await;
    assert!(!ok, "MQTT 5 refused: {err}");
    let (ok, err) = mpub(port, &["-u", "alice", "-P", "wrong", "-t", "x", "-m", "1"]).await;
    assert!(!ok && err.contains("not authorised"), "{err}");
    let (ok, err) = mpub(port, &["-t", "x", "-m", "1"]).await;
    assert!(!ok && err.contains("not authorised"), "{err}");
    mpub_ok(port, &["-u", "alice", "-P", "secret", "-t", "x", "-m", "1"]).await;

    // An empty client id: assigned for a clean session, refused for a persistent one.
    let mut c = connect_packet("", false, 60);
    c.set_login("alice", "secret");
    let (_, ack) = Raw::connect(port, c).await;
    assert_eq!(ack.code, ConnectReturnCode::BadClientId);
    let mut c = connect_packet("", true, 60);
    c.set_login("alice", "secret");
    let (_, ack) = Raw::connect(port, c).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_bound_holds_for_an_offline_session() {
    let b = start(|c| c.max_queued = 10).await;
    let port = b.local_addr().port();

    // Offline persistent session: 50 published, the newest 10 kept.
    let mut opts = options("bounded", port);
    opts.set_clean_session(false);
    let (mut c, _) = Client::connect(opts.clone()).await;
    c.subscribe("bq/#", QoS::AtLeastOnce).await;
    c.disconnect().await;
    let (mut publisher, _) = Client::connect(options("bq-pub", port)).await;
    for n in 0..50 {
        publisher
            .publish1("bq/x", n.to_string().as_bytes(), false)
            .await;
    }
    let (mut c, ack) = Client::connect(opts).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    while let Some(p) = c.next_publish(1).await {
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    let want: Vec<String> = (40..50).map(|n| n.to_string()).collect();
    assert_eq!(
        got, want,
        "the oldest were dropped, the newest 10 kept in order"
    );

    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_blocks_no_publisher_and_its_queue_stays_bounded() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    // Subscribed, and never reads again.
    let (mut stuck, _) = Raw::connect(port, connect_packet("stuck", true, 0)).await;
    stuck
        .send(Packet::Subscribe(Subscribe::new(
            "flood/#",
            QoS::AtLeastOnce,
        )))
        .await;
    assert!(matches!(
        stuck.recv(5.0).await,
        Recv::Packet(Packet::SubAck(_))
    ));
    let (mut healthy, _) = Client::connect(options("healthy", port)).await;
    healthy.subscribe("flood/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Client::connect(options("flood-pub", port)).await;
    let payload = vec![7u8; 4 * 1024];
    let n = 1500;
    let started = Instant::now();
    for _ in 0..n {
        publisher.publish1("flood/x", &payload, false).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "publishing took {took:?}");
    for got in 0..n {
        assert!(
            healthy.next_publish(10).await.is_some(),
            "healthy subscriber got only {got}"
        );
    }
    let stats = b.stats();
    assert!(
        stats.max_session_queued <= broker::DEFAULT_MAX_QUEUED,
        "{stats:?}"
    );
    assert!(
        stats.max_session_queued >= broker::DEFAULT_MAX_QUEUED - 100,
        "the stuck subscriber's queue is full, not unbounded: {stats:?}"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_listener_and_every_connection() {
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    let (mut raw, _) = Raw::connect(port, connect_packet("c1", false, 0)).await;
    let (mut rq, _) = Client::connect(options("c2", port)).await;
    tokio::time::timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("shutdown completes");
    assert!(matches!(raw.recv(5.0).await, Recv::Closed));
    let mut closed = false;
    while let Some(e) = rq.next_event(5).await {
        if e.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed);
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_err()
    );

    // Dropping a broker stops it too.
    let b = start(|_| {}).await;
    let port = b.local_addr().port();
    let (mut raw, _) = Raw::connect(port, connect_packet("c3", true, 0)).await;
    drop(b);
    assert!(matches!(raw.recv(10.0).await, Recv::Closed));
}

// ---------------------------------------------------------------- TLS and the fleet ACL

/// A CA, a server certificate for localhost/127.0.0.1 and client certificates whose CN is the
/// identity, as PEM files for mosquitto-clients and as rustls configurations.
struct Pki {
    dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
    roots: Arc<rustls::RootCertStore>,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "test fleet CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::new(ca_params.clone(), &ca_key);
        let server = params.signed_by(&key, &issuer).expect("server cert");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let roots = Arc::new(roots);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .expect("verifier");
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        Pki {
            dir,
            server: Arc::new(server),
            roots,
            ca_params,
            ca_key,
        }
    }

    /// A client certificate with this CN: (certificate PEM path, key PEM path, DER, key).
    fn client(&self, cn: &str) -> (PathBuf, PathBuf, rcgen::Certificate, rcgen::KeyPair) {
        use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = rcgen::Issuer::new(self.ca_params.clone(), &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("client cert");
        let file = cn.replace(':', "_");
        let crt = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&crt, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        (crt, key_path, cert, key)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// mosquitto-clients' connection arguments for the identity `cn`.
    fn tls_args(&self, port: u16, cn: &str) -> Vec<String> {
        let (crt, key, _, _) = self.client(cn);
        let mut args = self.ca_args(port);
        args.extend(["--cert".into(), path(&crt), "--key".into(), path(&key)]);
        args
    }

    fn ca_args(&self, port: u16) -> Vec<String> {
        vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            port.to_string(),
            "--cafile".into(),
            path(&self.ca_file()),
        ]
    }

    fn rumqttc(&self, id: &str, port: u16, cn: &str) -> MqttOptions {
        let (_, _, cert, key) = self.client(cn);
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("client config");
        let mut o = MqttOptions::new(id, "localhost", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
        o
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_name_nodes_and_the_fleet_acl_fences_them() {
    let pki = Pki::new();
    let revoked: broker::RevokedCheck = Arc::new(|node: &str| node == "stolen");
    let b = start(|c| {
        c.tls = Some(pki.server.clone());
        c.authorizer = Arc::new(FleetAcl::new("c1", revoked));
    })
    .await;
    let port = b.local_addr().port();
    let n1 = pki.tls_args(port, "n1");
    let n2 = pki.tls_args(port, "n2");

    // The hub (rumqttc over TLS, CN edgepod:hub) reads every node's out topics.
    let (mut hub, ack) = Client::connect(pki.rumqttc("hub", port, HUB_USERNAME)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert_eq!(
        hub.subscribe("edgepod/v1/c1/nodes/+/out/#", QoS::AtLeastOnce)
            .await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    // n1 may read its own in topics and the hub's; not n2's, not everyone's, not `#`; a CONNECT
    // username does not override the certificate.
    let own = Sub::spawn_with(
        &strs(&n1),
        &[
            "-i",
            "n1-agent",
            "-q",
            "1",
            "-t",
            "edgepod/v1/c1/nodes/n1/in/#",
            "-t",
            "edgepod/v1/c1/hub/#",
        ],
    );
    assert_eq!(own.subscribed().await, "1, 1");
    for filter in [
        "edgepod/v1/c1/nodes/n2/in/#",
        "edgepod/v1/c1/nodes/+/in/#",
        "#",
    ] {
        let spy = Sub::spawn_with(&strs(&n1), &["-u", HUB_USERNAME, "-q", "1", "-t", filter]);
        assert_eq!(spy.subscribed().await, "128", "n1 subscribing {filter}");
    }
    let spy = Sub::spawn_with(
        &strs(&n1),
        &[
            "-q",
            "1",
            "-t",
            "edgepod/v1/c1/nodes/n2/in/#",
            "-t",
            "edgepod/v1/c1/nodes/n1/in/#",
        ],
    );
    assert_eq!(spy.subscribed().await, "128, 1");

    // The hub writes to n2 then n1: n1 gets its own only.
    hub.publish1("edgepod/v1/c1/nodes/n2/in/desired", b"for-n2", true)
        .await;
    hub.publish1("edgepod/v1/c1/nodes/n1/in/desired", b"for-n1", true)
        .await;
    hub.publish1("edgepod/v1/c1/hub/presence", b"hub-up", false)
        .await;
    own.wait("edgepod/v1/c1/nodes/n1/in/desired for-n1").await;
    own.wait("edgepod/v1/c1/hub/presence hub-up").await;
    spy.wait("edgepod/v1/c1/nodes/n1/in/desired for-n1").await;
    for s in [&own, &spy] {
        assert!(!s.has_containing("for-n2"), "{}", s.dump());
    }
    // n2 reads its own (retained) state.
    let n2_sub = Sub::spawn_with(
        &strs(&n2),
        &["-q", "1", "-t", "edgepod/v1/c1/nodes/n2/in/#"],
    );
    n2_sub
        .wait("edgepod/v1/c1/nodes/n2/in/desired for-n2")
        .await;

    // n1 publishing as n2, and onto n2's desired state: acknowledged, dropped. Then its own.
    let (ok, err) = mpub_with(
        &strs(&n1),
        &[
            "-q",
            "1",
            "-t",
            "edgepod/v1/c1/nodes/n2/out/status",
            "-m",
            "forged",
        ],
    )
    .await;
    assert!(
        ok,
        "ACL-denied publishes are acknowledged, as Mosquitto does: {err}"
    );
    mpub_with(
        &strs(&n1),
        &[
            "-q",
            "1",
            "-t",
            "edgepod/v1/c1/nodes/n2/in/desired",
            "-m",
            "evil",
        ],
    )
    .await;
    mpub_with(
        &strs(&n1),
        &[
            "-q",
            "1",
            "-t",
            "edgepod/v1/c1/nodes/n1/out/status",
            "-m",
            "honest",
        ],
    )
    .await;
    let p = hub.next_publish(5).await.expect("n1's own status");
    assert_eq!(p.topic, "edgepod/v1/c1/nodes/n1/out/status");
    assert_eq!(&p.payload[..], b"honest");
    mpub_with(
        &strs(&n2),
        &[
            "-q",
            "1",
            "-t",
            "edgepod/v1/c1/nodes/n2/out/status",
            "-m",
            "n2-ok",
        ],
    )
    .await;
    let p = hub.next_publish(5).await.expect("n2's status");
    assert_eq!(&p.payload[..], b"n2-ok");
    assert!(!n2_sub.has_containing("evil"), "{}", n2_sub.dump());

    // n2 reusing n1's client id neither takes n1's connection over nor gets in.
    let (ok, err) = mpub_with(
        &strs(&n2),
        &[
            "-i",
            "n1-agent",
            "-t",
            "edgepod/v1/c1/nodes/n2/out/x",
            "-m",
            "1",
        ],
    )
    .await;
    assert!(!ok && err.contains("identifier rejected"), "{err}");
    hub.publish1("edgepod/v1/c1/hub/presence", b"still-n1", false)
        .await;
    own.wait("edgepod/v1/c1/hub/presence still-n1").await;
    let connacks = own
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("received CONNACK"))
        .count();
    assert_eq!(connacks, 1, "n1 was never disconnected:\n{}", own.dump());

    // A revoked node is refused at CONNECT.
    let stolen = pki.tls_args(port, "stolen");
    let (ok, err) = mpub_with(
        &strs(&stolen),
        &["-t", "edgepod/v1/c1/nodes/stolen/out/x", "-m", "1"],
    )
    .await;
    assert!(!ok && err.contains("not authorised"), "{err}");
    // No client certificate: the TLS handshake fails.
    let (ok, _) = mpub_with(&strs(&pki.ca_args(port)), &["-t", "x", "-m", "1"]).await;
    assert!(!ok);
    // Plain MQTT on the TLS port: no CONNACK, closed.
    let mut raw = Raw::open(port).await;
    raw.send(Packet::Connect(connect_packet("plain", true, 60)))
        .await;
    match raw.recv(5.0).await {
        Recv::Closed => {}
        Recv::NotMqtt => {
            raw.buf.clear();
            let mut rest = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), raw.s.read_to_end(&mut rest)).await;
            assert!(read.is_ok(), "closed after its TLS alert");
        }
        other => panic!("{other:?}"),
    }
    b.shutdown().await;
}
