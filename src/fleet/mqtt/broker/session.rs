//! One client's session: its subscriptions, the bounded queue of messages waiting for it, the
//! QoS 1 messages sent and not yet acknowledged, and the link to the connection serving it (if
//! any). A persistent session (clean_session=0) outlives its connections, in memory.
//!
//! Publishers only append to the queue and wake the connection's writer; they never wait on a
//! socket, so a slow subscriber costs its own queue and nothing else. Owns no routing: the router
//! decides who gets what.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{LastWill, Publish};
use tokio::sync::Notify;

use super::acl::ClientIdentity;

/// How many QoS 1 messages may be sent to one client and not yet acknowledged: the rest wait in
/// the queue. Mosquitto's max_inflight_messages is 20; more keeps a loopback pipe full.
pub(super) const MAX_INFLIGHT: usize = 64;

/// A message on its way to one subscriber; topic and payload are shared by every copy.
#[derive(Clone, Debug)]
pub(super) struct Msg {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

impl Msg {
    fn publish(&self, pkid: u16, dup: bool) -> Publish {
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.to_string(),
            pkid,
            payload: self.payload.clone(),
        }
    }
}

/// The connection currently serving a session.
pub(super) struct Link {
    pub conn_id: u64,
    /// Wakes the connection's writer: something was queued or acknowledged.
    pub wake: Arc<Notify>,
    /// Closes the connection: another one took the client id over.
    pub kill: Arc<Notify>,
    pub will: Option<LastWill>,
    pub identity: ClientIdentity,
}

pub(super) struct Session {
    pub client_id: Arc<str>,
    /// The username that created the session: only it may resume or take it over.
    pub owner: Option<String>,
    pub persistent: bool,
    state: Mutex<SessionState>,
}

pub(super) struct SessionState {
    pub subscriptions: HashMap<String, QoS>,
    pub link: Option<Link>,
    queue: VecDeque<Msg>,
    /// Sent, awaiting PUBACK, in sending order: resent with DUP on reconnect.
    inflight: VecDeque<(u16, Msg)>,
    next_pkid: u16,
    max_queued: usize,
    dropped: u64,
}

impl Session {
    pub fn new(
        client_id: Arc<str>,
        owner: Option<String>,
        persistent: bool,
        max_queued: usize,
    ) -> Session {
        Session {
            client_id,
            owner,
            persistent,
            state: Mutex::new(SessionState {
                subscriptions: HashMap::new(),
                link: None,
                queue: VecDeque::new(),
                inflight: VecDeque::new(),
                next_pkid: 1,
                max_queued: max_queued.max(1),
                dropped: 0,
            }),
        }
    }

    /// The state; a panic elsewhere while it was held leaves data that is still consistent
    /// (every update is a single push or pop), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionState {
    /// Queues a message for the client and wakes its writer. An offline session keeps only
    /// QoS 1 (as Mosquitto does by default). When the queue is full the oldest QoS 0 message
    /// goes first, then the oldest QoS 1 one: newer state is worth more than older.
    pub fn enqueue(&mut self, client_id: &str, msg: Msg) {
        if self.link.is_none() && msg.qos == QoS::AtMostOnce {
            return;
        }
        if self.queue.len() + self.inflight.len() >= self.max_queued {
            let victim = self
                .queue
                .iter()
                .position(|m| m.qos == QoS::AtMostOnce)
                .or(if self.queue.is_empty() { None } else { Some(0) });
            match victim {
                Some(i) => {
                    let old = self.queue.remove(i);
                    if old.is_some_and(|m| m.qos != QoS::AtMostOnce) {
                        self.note_drop(client_id);
                    }
                }
                // Everything is in flight (a limit below MAX_INFLIGHT): the new one goes.
                None => {
                    if msg.qos != QoS::AtMostOnce {
                        self.note_drop(client_id);
                    }
                    return;
                }
            }
        }
        self.queue.push_back(msg);
        self.wake();
    }

    fn note_drop(&mut self, client_id: &str) {
        self.dropped += 1;
        // The first of a run and then every thousandth: a stuck client must not flood the log.
        if self.dropped % 1000 == 1 {
            tracing::warn!(
                client_id,
                dropped = self.dropped,
                limit = self.max_queued,
                "MQTT session queue full: dropping its oldest QoS 1 message"
            );
        }
    }

    /// The client went away: QoS 0 messages still waiting are not kept for an offline client.
    pub fn drop_qos0(&mut self) {
        self.queue.retain(|m| m.qos != QoS::AtMostOnce);
    }

    pub fn wake(&self) {
        if let Some(link) = &self.link {
            link.wake.notify_one();
        }
    }

    /// The unacknowledged QoS 1 messages again, flagged DUP with their packet ids (MQTT 3.1.1
    /// §4.4): what a reconnecting client of a persistent session gets first.
    pub fn resend_inflight(&self) -> Vec<Publish> {
        self.inflight
            .iter()
            .map(|(pkid, m)| m.publish(*pkid, true))
            .collect()
    }

    /// The next queued message to send now, if the in-flight window allows; a QoS 1 one
    /// becomes in flight.
    pub fn next_ready(&mut self) -> Option<Publish> {
        let front = self.queue.front()?;
        if front.qos != QoS::AtMostOnce && self.inflight.len() >= MAX_INFLIGHT {
            return None;
        }
        let m = self.queue.pop_front()?;
        if self.queue.is_empty() {
            self.dropped = 0;
        }
        if m.qos == QoS::AtMostOnce {
            return Some(m.publish(0, false));
        }
        let pkid = self.allocate_pkid();
        let p = m.publish(pkid, false);
        self.inflight.push_back((pkid, m));
        Some(p)
    }

    /// A PUBACK from the client: the message is delivered.
    pub fn acknowledge(&mut self, pkid: u16) -> bool {
        match self.inflight.iter().position(|(id, _)| *id == pkid) {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.len() + self.inflight.len()
    }

    /// The next packet id not in flight (at most MAX_INFLIGHT are, so this ends quickly).
    fn allocate_pkid(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|(id, _)| *id == pkid) {
                return pkid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize, qos: QoS) -> Msg {
        Msg {
            topic: Arc::from("t"),
            payload: Bytes::from(n.to_string()),
            qos,
            retain: false,
        }
    }

    fn online(s: &Session) {
        s.lock().link = Some(Link {
            conn_id: 1,
            wake: Arc::new(Notify::new()),
            kill: Arc::new(Notify::new()),
            will: None,
            identity: ClientIdentity {
                username: None,
                client_id: "c".into(),
                from_certificate: false,
            },
        });
    }

    fn take_ready(st: &mut SessionState, max: usize) -> Vec<Publish> {
        std::iter::from_fn(|| st.next_ready()).take(max).collect()
    }

    fn payloads(p: &[Publish]) -> Vec<String> {
        p.iter()
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
            .collect()
    }

    #[test]
    fn a_full_queue_drops_qos0_first_then_the_oldest_qos1() {
        let s = Session::new(Arc::from("c"), None, true, 3);
        online(&s);
        let mut st = s.lock();
        st.enqueue("c", msg(1, QoS::AtLeastOnce));
        st.enqueue("c", msg(2, QoS::AtMostOnce));
        st.enqueue("c", msg(3, QoS::AtLeastOnce));
        st.enqueue("c", msg(4, QoS::AtLeastOnce)); // drops 2 (QoS 0)
        st.enqueue("c", msg(5, QoS::AtLeastOnce)); // drops 1 (oldest QoS 1)
        assert_eq!(st.queued(), 3);
        assert_eq!(payloads(&take_ready(&mut st, 10)), ["3", "4", "5"]);
    }

    #[test]
    fn offline_sessions_keep_qos1_only() {
        let s = Session::new(Arc::from("c"), None, true, 10);
        let mut st = s.lock();
        st.enqueue("c", msg(1, QoS::AtMostOnce));
        st.enqueue("c", msg(2, QoS::AtLeastOnce));
        assert_eq!(payloads(&take_ready(&mut st, 10)), ["2"]);
    }

    #[test]
    fn the_inflight_window_holds_and_unacked_messages_are_resent_with_dup() {
        let s = Session::new(Arc::from("c"), None, true, 1000);
        online(&s);
        let mut st = s.lock();
        for n in 0..MAX_INFLIGHT + 5 {
            st.enqueue("c", msg(n, QoS::AtLeastOnce));
        }
        let first = take_ready(&mut st, 1000);
        assert_eq!(first.len(), MAX_INFLIGHT);
        assert!(take_ready(&mut st, 1000).is_empty(), "window full");
        assert!(st.acknowledge(first[0].pkid));
        assert!(!st.acknowledge(first[0].pkid), "acknowledged twice");
        assert_eq!(take_ready(&mut st, 1000).len(), 1);
        let again = st.resend_inflight();
        assert_eq!(again.len(), MAX_INFLIGHT);
        assert!(again.iter().all(|p| p.dup && p.pkid != 0));
        assert_eq!(again[0].pkid, first[1].pkid);
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_flight() {
        let s = Session::new(Arc::from("c"), None, true, 1000);
        online(&s);
        let mut st = s.lock();
        st.next_pkid = u16::MAX;
        st.enqueue("c", msg(1, QoS::AtLeastOnce));
        st.enqueue("c", msg(2, QoS::AtLeastOnce));
        let sent = take_ready(&mut st, 10);
        assert_eq!(sent[0].pkid, u16::MAX);
        assert_eq!(sent[1].pkid, 1);
    }
}
