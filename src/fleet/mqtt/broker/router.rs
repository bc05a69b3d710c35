//! The broker's shared state: sessions by client id, the subscription tree and the retained
//! messages, behind one lock, and the rules that change them together: attaching a connection
//! to a session (takeover, clean or persistent), detaching it (and its Last Will), routing a
//! publish to every matching session's queue, and retained messages under a byte budget.
//!
//! Lock order: the router's lock, then a session's. Nothing here waits on a socket. Owns no
//! connection I/O (connection.rs) and no policy beyond asking the [`Authorizer`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::LastWill;

use super::BrokerStats;
use super::acl::{Authorizer, ClientIdentity};
use super::session::{Link, Msg, Session};
use super::subtree::SubTree;
use super::topic;

pub(super) struct Router {
    pub authorizer: Arc<dyn Authorizer>,
    pub max_queued: usize,
    max_retained_bytes: usize,
    next_conn_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<Arc<str>, Arc<Session>>,
    subs: SubTree,
    retained: HashMap<Arc<str>, Retained>,
    retained_bytes: usize,
}

struct Retained {
    payload: Bytes,
    qos: QoS,
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

impl Router {
    pub fn new(
        authorizer: Arc<dyn Authorizer>,
        max_queued: usize,
        max_retained_bytes: usize,
    ) -> Router {
        Router {
            authorizer,
            max_queued,
            max_retained_bytes,
            next_conn_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Every update keeps the maps consistent at each step, so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the client id's session to a new connection: an existing connection is closed
    /// (MQTT 3.1.1 §3.1.4) and its Will published, as Mosquitto does; a persistent session is
    /// resumed unless `clean`. Returns the session and whether it was resumed (CONNACK's
    /// session_present), or None when the client id's session belongs to another username: a
    /// node must not take over, end or read another's session by reusing its client id.
    pub fn attach(&self, client_id: &str, clean: bool, link: Link) -> Option<(Arc<Session>, bool)> {
        let mut st = self.lock();
        let owner = link.identity.username.clone();
        let mut link = Some(link);
        let mut orphan_will = None;
        let mut resumed = None;
        if let Some(session) = st.sessions.get(client_id).cloned() {
            if session.owner != owner {
                return None;
            }
            let mut ss = session.lock();
            if let Some(old) = ss.link.take() {
                tracing::info!(
                    client_id,
                    "MQTT client id connected again: closing its old connection"
                );
                old.kill.notify_one();
                orphan_will = old.will.map(|w| (old.identity, w));
            }
            if session.persistent && !clean {
                ss.link = link.take();
                // Whatever waits in the queue goes to the new connection.
                ss.wake();
                drop(ss);
                resumed = Some(session);
            } else {
                let filters: Vec<String> = ss.subscriptions.drain().map(|(f, _)| f).collect();
                drop(ss);
                for f in filters {
                    st.subs.remove(&f, client_id);
                }
                st.sessions.remove(client_id);
            }
        }
        let (session, present) = match resumed {
            Some(s) => (s, true),
            None => {
                let s = Arc::new(Session::new(
                    Arc::from(client_id),
                    owner,
                    !clean,
                    self.max_queued,
                ));
                s.lock().link = link.take();
                st.sessions.insert(s.client_id.clone(), s.clone());
                (s, false)
            }
        };
        if let Some((identity, will)) = orphan_will {
            self.publish_will_locked(&mut st, &identity, will);
        }
        Some((session, present))
    }

    /// The connection `conn_id` serving `session` ended: a clean session goes away, a
    /// persistent one stays to collect QoS 1 messages. The Will is published when the end was
    /// not a DISCONNECT (`abnormal`). Nothing happens when another connection took over.
    pub fn detach(&self, session: &Arc<Session>, conn_id: u64, abnormal: bool) {
        let mut st = self.lock();
        let mut ss = session.lock();
        let Some(link) = ss.link.take_if(|l| l.conn_id == conn_id) else {
            return;
        };
        if !session.persistent {
            let filters: Vec<String> = ss.subscriptions.drain().map(|(f, _)| f).collect();
            drop(ss);
            for f in filters {
                st.subs.remove(&f, &session.client_id);
            }
            if st
                .sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                st.sessions.remove(&session.client_id);
            }
        } else {
            ss.drop_qos0();
            drop(ss);
        }
        if abnormal && let Some(will) = link.will {
            self.publish_will_locked(&mut st, &link.identity, will);
        }
    }

    /// Whether `conn_id` still serves `session` (it was not taken over).
    fn current(st: &State, session: &Arc<Session>, conn_id: u64) -> bool {
        st.sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
            && session
                .lock()
                .link
                .as_ref()
                .is_some_and(|l| l.conn_id == conn_id)
    }

    /// Adds a granted subscription and returns the retained messages it matches, to be sent
    /// after the SUBACK with RETAIN set.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        conn_id: u64,
        filter: &str,
        qos: QoS,
    ) -> Vec<Msg> {
        let mut st = self.lock();
        if !Self::current(&st, session, conn_id) {
            return Vec::new();
        }
        st.subs.insert(filter, &session.client_id, qos);
        session.lock().subscriptions.insert(filter.to_string(), qos);
        st.retained
            .iter()
            .filter(|(t, _)| topic::matches(t, filter))
            .map(|(t, r)| Msg {
                topic: t.clone(),
                payload: r.payload.clone(),
                qos: min_qos(r.qos, qos),
                retain: true,
            })
            .collect()
    }

    pub fn unsubscribe(&self, session: &Arc<Session>, conn_id: u64, filter: &str) {
        let mut st = self.lock();
        if !Self::current(&st, session, conn_id) {
            return;
        }
        if session.lock().subscriptions.remove(filter).is_some() {
            st.subs.remove(filter, &session.client_id);
        }
    }

    /// A client's (already authorized) PUBLISH: retained if asked, then queued for every
    /// matching subscriber.
    pub fn publish(&self, msg: Msg) {
        let mut st = self.lock();
        if msg.retain {
            self.retain_locked(&mut st, &msg);
        }
        Self::route_locked(&mut st, msg);
    }

    fn publish_will_locked(&self, st: &mut State, identity: &ClientIdentity, will: LastWill) {
        if !topic::valid_topic(&will.topic) || !self.authorizer.publish(identity, &will.topic) {
            tracing::debug!(client_id = %identity.client_id, topic = %will.topic, "MQTT Will not authorized: dropped");
            return;
        }
        tracing::debug!(client_id = %identity.client_id, topic = %will.topic, "publishing MQTT Will");
        let msg = Msg {
            topic: Arc::from(will.topic.as_str()),
            payload: will.message,
            qos: min_qos(will.qos, QoS::AtLeastOnce),
            retain: will.retain,
        };
        if msg.retain {
            self.retain_locked(st, &msg);
        }
        Self::route_locked(st, msg);
    }

    fn route_locked(st: &mut State, msg: Msg) {
        let mut targets = HashMap::new();
        st.subs.collect(&msg.topic, &mut targets);
        for (client, granted) in targets {
            if let Some(session) = st.sessions.get(&client) {
                let copy = Msg {
                    // Sent because of an established subscription: RETAIN 0 (§3.3.1.3).
                    retain: false,
                    qos: min_qos(msg.qos, granted),
                    ..msg.clone()
                };
                session.lock().enqueue(&client, copy);
            }
        }
    }

    /// Stores (or, with an empty payload, clears) the topic's retained message within the byte
    /// budget. A message over budget is not kept and neither is the one it replaces: a late
    /// subscriber must not get state older than what was last published.
    fn retain_locked(&self, st: &mut State, msg: &Msg) {
        if let Some(old) = st.retained.remove(&msg.topic) {
            st.retained_bytes -= msg.topic.len() + old.payload.len();
        }
        if msg.payload.is_empty() {
            return;
        }
        let size = msg.topic.len() + msg.payload.len();
        if st.retained_bytes + size > self.max_retained_bytes {
            tracing::warn!(
                topic = %msg.topic,
                size,
                stored = st.retained_bytes,
                limit = self.max_retained_bytes,
                "MQTT retained messages over their byte limit: not retaining this one"
            );
            return;
        }
        st.retained_bytes += size;
        st.retained.insert(
            msg.topic.clone(),
            Retained {
                payload: msg.payload.clone(),
                qos: msg.qos,
            },
        );
    }

    pub fn stats(&self) -> BrokerStats {
        let st = self.lock();
        let mut stats = BrokerStats {
            sessions: st.sessions.len(),
            retained: st.retained.len(),
            retained_bytes: st.retained_bytes,
            ..BrokerStats::default()
        };
        for session in st.sessions.values() {
            let ss = session.lock();
            stats.connected += usize::from(ss.link.is_some());
            stats.subscriptions += ss.subscriptions.len();
            stats.queued += ss.queued();
            stats.max_session_queued = stats.max_session_queued.max(ss.queued());
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::mqtt::broker::AllowAll;
    use tokio::sync::Notify;

    fn link(conn_id: u64, user: Option<&str>, will: Option<LastWill>) -> Link {
        Link {
            conn_id,
            wake: Arc::new(Notify::new()),
            kill: Arc::new(Notify::new()),
            will,
            identity: ClientIdentity {
                username: user.map(str::to_string),
                client_id: "c".into(),
                from_certificate: false,
            },
        }
    }

    fn msg(topic: &str, payload: &str, retain: bool) -> Msg {
        Msg {
            topic: Arc::from(topic),
            payload: Bytes::from(payload.to_string()),
            qos: QoS::AtLeastOnce,
            retain,
        }
    }

    #[test]
    fn retained_messages_stay_within_their_byte_budget() {
        let r = Router::new(Arc::new(AllowAll), 10, 20);
        r.publish(msg("a", "123456789", true)); // 10 bytes
        r.publish(msg("b", "123456789", true)); // 20
        assert_eq!((r.stats().retained, r.stats().retained_bytes), (2, 20));
        // Over budget: not kept, and the value it replaces is gone too (never stale).
        r.publish(msg("b", "1234567890", true));
        assert_eq!((r.stats().retained, r.stats().retained_bytes), (1, 10));
        r.publish(msg("b", "12", true));
        assert_eq!(r.stats().retained_bytes, 13);
        r.publish(msg("a", "", true));
        assert_eq!((r.stats().retained, r.stats().retained_bytes), (1, 3));
    }

    #[test]
    fn a_client_id_stays_with_the_username_that_made_its_session() {
        let r = Router::new(Arc::new(AllowAll), 10, 100);
        let (s, present) = r
            .attach("n1", false, link(1, Some("n1"), None))
            .expect("first");
        assert!(!present);
        assert!(r.attach("n1", true, link(2, Some("n2"), None)).is_none());
        assert!(r.attach("n1", true, link(3, None, None)).is_none());
        // Its owner resumes it after the connection ends.
        r.detach(&s, 1, true);
        let (_, present) = r
            .attach("n1", false, link(4, Some("n1"), None))
            .expect("owner");
        assert!(present);
    }

    #[test]
    fn takeover_publishes_the_old_will_and_detach_of_the_old_connection_is_a_no_op() {
        let r = Router::new(Arc::new(AllowAll), 10, 100);
        let (watcher, _) = r.attach("w", true, link(1, None, None)).expect("watcher");
        r.subscribe(&watcher, 1, "will/#", QoS::AtLeastOnce);
        let will = LastWill::new("will/c", "gone", QoS::AtLeastOnce, false);
        let (old, _) = r.attach("c", true, link(2, None, Some(will))).expect("old");
        let (new, present) = r.attach("c", true, link(3, None, None)).expect("new");
        assert!(!present);
        assert!(!Arc::ptr_eq(&old, &new));
        assert_eq!(
            watcher.lock().queued(),
            1,
            "the displaced connection's Will"
        );
        r.detach(&old, 2, true);
        assert_eq!(
            r.stats().sessions,
            2,
            "the new session survives the old detach"
        );
        assert_eq!(watcher.lock().queued(), 1, "no second Will");
        r.detach(&new, 3, false);
        assert_eq!(r.stats().sessions, 1);
    }
}
