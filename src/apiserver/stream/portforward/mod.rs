//! `pods/portforward`: picks the transport from the request and hands it to the right speaker.
//!
//! Owns: the choice between SPDY tunnelled in WebSocket (kubectl's first try), plain SPDY/3.1
//! (its fallback) and the older WebSocket channel protocol. Must not touch: SPDY framing
//! ([`super::spdy`]) or the node side.

mod pairs;
mod websocket;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::channel::ChannelProtocol;
use super::upgrade;
use crate::apiserver::ApiError;
use crate::fleet::{NodeLink, PodRef};

/// The SPDY sub-protocol (X-Stream-Protocol-Version) for port forwarding.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// kubectl's WebSocket sub-protocol for SPDY tunnelled in binary messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Serves `pods/NAME/portforward` (GET or POST) for an already-authorised request. Ports come
/// from each SPDY stream's `port` header, or from the `ports` query for the older WebSocket
/// protocol.
pub async fn port_forward(request: Request, link: Arc<dyn NodeLink>, pod: PodRef) -> Response {
    let (mut parts, _body) = request.into_parts();
    if upgrade::is_spdy(&parts.headers) {
        let protocol =
            match upgrade::negotiate_stream_protocol(&parts.headers, &[PORT_FORWARD_PROTOCOL]) {
                Ok(p) => p,
                Err(refused) => return *refused,
            };
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return ApiError::bad_request("unable to upgrade: this connection cannot be upgraded")
                .into_response();
        };
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let (reader, writer) = upgrade::upgraded_transport(upgraded);
                    pairs::serve(reader, writer, link, pod).await;
                }
                Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
            }
        });
        return upgrade::spdy_switching_protocols(protocol);
    }
    if !upgrade::is_websocket(&parts.headers) {
        return ApiError::bad_request("Upgrade request required").into_response();
    }
    let ports = websocket::ports_from_query(parts.uri.query().unwrap_or(""));
    let (ws, offered) = match upgrade::accept_websocket(&mut parts).await {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    if offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
        return ws
            .protocols([TUNNEL_PROTOCOL])
            .on_upgrade(move |socket| async move {
                let (reader, writer) = upgrade::websocket_transport(socket);
                pairs::serve(reader, writer, link, pod).await;
            });
    }
    // The older channel protocol; no sub-protocol at all means its binary form.
    let protocol = if offered.is_empty() || offered.iter().any(|p| p == ChannelProtocol::V4.name())
    {
        ChannelProtocol::V4
    } else if offered
        .iter()
        .any(|p| p == ChannelProtocol::V4Base64.name())
    {
        ChannelProtocol::V4Base64
    } else {
        return ApiError::bad_request(format!(
            "unable to upgrade: requested protocol(s) are not supported: {offered:?}; supports {:?}",
            [TUNNEL_PROTOCOL, ChannelProtocol::V4.name(), ChannelProtocol::V4Base64.name()]
        ))
        .into_response();
    };
    let ports = match ports {
        Ok(ports) => ports,
        Err(e) => return e.into_response(),
    };
    let ws = if offered.is_empty() {
        ws
    } else {
        ws.protocols([protocol.name()])
    };
    ws.on_upgrade(move |socket| websocket::serve(socket, protocol, ports, link, pod))
}
