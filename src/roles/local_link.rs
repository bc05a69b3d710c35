//! The in-process carrier: the hub's [`NodeLink`] to the agent running in the same process
//! (`edgepod up`). Desired pods, and the ConfigMaps and Secrets they name, go straight into the
//! agent's store (one transaction); streams go to the agent's stream server.
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::agent::api_pods;
use crate::agent::streams::NodeStreams;
use crate::fleet::{
    ByteReader, DesiredState, Duplex, ExecRequest, ExecSession, HubLink, LinkError, LogRequest,
    NodeLink, PodRef,
};
use crate::store::Store;

pub struct LocalNode {
    pub agent_store: Arc<Store>,
    pub hub: Arc<dyn HubLink>,
    pub streams: NodeStreams,
}

impl NodeLink for LocalNode {
    fn desired(&self, state: DesiredState) -> BoxFuture<'static, Result<(), LinkError>> {
        let store = Arc::clone(&self.agent_store);
        let hub = Arc::clone(&self.hub);
        Box::pin(async move {
            let gone = tokio::task::spawn_blocking(move || api_pods::apply(&store, state))
                .await
                .map_err(|e| LinkError::Failed(e.to_string()))?
                .map_err(|e| LinkError::Failed(e.to_string()))?;
            for pod in gone {
                hub.pod_gone(pod).await?;
            }
            Ok(())
        })
    }

    fn logs(&self, req: LogRequest) -> BoxFuture<'static, Result<ByteReader, LinkError>> {
        let streams = self.streams.clone();
        Box::pin(async move { streams.logs(req).await })
    }

    fn exec(&self, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, LinkError>> {
        let streams = self.streams.clone();
        Box::pin(async move { streams.exec(req).await })
    }

    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, LinkError>> {
        let streams = self.streams.clone();
        Box::pin(async move { streams.port_forward(pod, port).await })
    }
}
