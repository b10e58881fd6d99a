//! Services and EndpointSlices of every namespace (and Nodes, for a proxy that writes
//! LoadBalancer status), mirrored from the API into in-memory stores
//! (kube-rs reflectors), with a wake-up for the reconciler on every change.
//!
//! Watches reconnect by themselves with kube-rs' default backoff. Their errors are logged
//! once when a watch breaks and once when it works again, not at every retry: the proxy starts
//! before the API is up and must not flood its log meanwhile.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::Notify;

pub struct Cluster {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    /// Only watched where LoadBalancer status may be written (their addresses are the
    /// ingress); `None` elsewhere, so an agent's proxy does not watch every Node.
    pub nodes: Option<Store<Node>>,
}

impl Cluster {
    /// Starts both watches; `changed` is notified after every event applied to a store.
    pub fn watch(client: Client, changed: Arc<Notify>, nodes: bool) -> Cluster {
        Cluster {
            services: mirror::<Service>(client.clone(), "Services", changed.clone()),
            slices: mirror::<EndpointSlice>(client.clone(), "EndpointSlices", changed.clone()),
            nodes: nodes.then(|| mirror::<Node>(client, "Nodes", changed)),
        }
    }

    /// The Nodes now (empty where they are not watched).
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.as_ref().map(|n| n.state()).unwrap_or_default()
    }

    /// Waits for the first complete list of both kinds.
    pub async fn ready(&self) {
        // Only fails if the writer was dropped, i.e. the watch task ended: it never does.
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        if let Some(nodes) = &self.nodes {
            let _ = nodes.wait_until_ready().await;
        }
    }
}

fn mirror<K>(client: Client, what: &'static str, changed: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client), watcher::Config::default())
        .default_backoff()
        // Managed fields and annotations are most of an object's size and never read here.
        .map_ok(|event| {
            event.modify(|object| {
                object.managed_fields_mut().clear();
                object.annotations_mut().clear();
            })
        });
    let mut stream = reflector::reflector(writer, stream).boxed();
    tokio::spawn(async move {
        let mut broken: Option<String> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if broken.take().is_some() {
                        tracing::info!("watching {what} works again");
                    }
                    changed.notify_one();
                }
                Err(e) => {
                    let error = crate::log::one_line(&e);
                    if broken.as_deref() != Some(error.as_str()) {
                        tracing::warn!("watching {what}: {error} (retrying with backoff)");
                        broken = Some(error);
                    }
                }
            }
        }
    });
    store
}
