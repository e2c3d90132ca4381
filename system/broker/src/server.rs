//! The broker's listener: tansu's request handlers over this crate's storage
//! ([`crate::storage`]), with this crate's group coordinator ([`crate::coordinator`]), its Fetch
//! long poll ([`crate::fetch`]), and ListGroups/DescribeGroups answered from the coordinator's
//! membership.
//!
//! tansu's own `Broker::listen` wires its coordinator and handlers in with no way to swap one,
//! so this module builds the same route table from tansu's public per-request services and
//! runs its own accept loop; every request this crate does not replace is tansu's.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use rama::{
    Context, Layer as _, Service,
    layer::{MapErrLayer, MapStateLayer},
};
use tansu_broker::service::{auth, coordinator as coordinator_routes, storage as storage_routes};
use tansu_sans_io::{
    ApiKey as _, DescribeGroupsRequest, DescribeGroupsResponse, FetchRequest, ListGroupsRequest,
    ListGroupsResponse,
};
use tansu_service::{
    BytesFrameLayer, FrameRequestLayer, FrameRouteBuilder, FrameRouteService, TcpBytesLayer,
    TcpContext, TcpContextLayer,
};
use tansu_storage::Storage;
use tokio::{net::TcpListener, task::JoinSet};
use tracing::{debug, warn};

use crate::{coordinator::GroupCoordinator, fetch::LongPollFetch, storage::LogStorage};

type Routes = FrameRouteBuilder<(), tansu_broker::Error>;
/// One of tansu's functions that add the route of a request to a route table.
type AddRoute<S> = fn(Routes, S) -> Result<Routes, tansu_broker::Error>;

/// How often tansu's storage maintenance (retention) runs, as tansu's broker does by default.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(600);

/// Serves Kafka clients on `listener` until the future is dropped (which drops every
/// connection with it).
pub(crate) async fn serve<S: Storage>(
    listener: TcpListener,
    storage: LogStorage<S>,
    cluster_id: String,
) -> anyhow::Result<()> {
    let coordinator = GroupCoordinator::new(storage.clone());
    let mut connections = JoinSet::new();
    let mut maintenance = tokio::time::interval(MAINTENANCE_EVERY);
    maintenance.tick().await;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Typically EMFILE; accepting again at once would spin.
                        warn!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(err) = stream.set_nodelay(true) {
                    debug!(error = %err, "cannot set TCP_NODELAY");
                }
                let routes = routes(&storage, &coordinator)
                    .context("cannot build the request routes")?;
                let service = (
                    TcpContextLayer::new(TcpContext::default().cluster_id(Some(cluster_id.clone()))),
                    TcpBytesLayer::<()>::default(),
                    BytesFrameLayer::default(),
                )
                    .into_layer(routes);
                connections.spawn(async move {
                    if let Err(err) = service.serve(Context::default(), stream).await {
                        // Clients closing their connection is the usual way a connection ends.
                        debug!(%peer, error = ?err, "connection ended");
                    }
                });
            }
            _ = maintenance.tick() => {
                let storage = storage.clone();
                connections.spawn(async move {
                    if let Err(err) = storage.maintain(std::time::SystemTime::now()).await {
                        debug!(error = %err, "storage maintenance failed");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The route table: tansu's handlers, with Fetch, the group requests, ListGroups and
/// DescribeGroups replaced.
fn routes<S: Storage>(
    storage: &LogStorage<S>,
    coordinator: &GroupCoordinator<LogStorage<S>>,
) -> Result<FrameRouteService<(), tansu_broker::Error>, tansu_broker::Error> {
    let tansu: [AddRoute<LogStorage<S>>; 23] = [
        storage_routes::add_offsets_to_txn,
        storage_routes::add_partitions_to_txn,
        storage_routes::alter_user_scram_credentials,
        storage_routes::consumer_group_describe,
        storage_routes::create_acls,
        storage_routes::create_topics,
        storage_routes::delete_groups,
        storage_routes::delete_records,
        storage_routes::delete_topics,
        storage_routes::describe_acls,
        storage_routes::describe_cluster,
        storage_routes::describe_configs,
        storage_routes::describe_topic_partitions,
        storage_routes::describe_user_scram_credentials,
        storage_routes::find_coordinator,
        storage_routes::get_telemetry_subscriptions,
        storage_routes::incremental_alter_configs,
        storage_routes::init_producer_id,
        storage_routes::list_offsets,
        storage_routes::list_partition_reassignments,
        storage_routes::metadata,
        storage_routes::produce,
        storage_routes::txn_offset_commit_request,
    ];
    let mut builder = FrameRouteService::<(), tansu_broker::Error>::builder();
    for route in tansu {
        builder = route(builder, storage.clone())?;
    }
    builder = coordinator_routes::services(builder, coordinator.clone())?;
    builder = auth::services(builder)?;

    let state = storage.clone();
    builder = builder.with_route(
        FetchRequest::KEY,
        (
            MapErrLayer::new(tansu_broker::Error::from),
            MapStateLayer::new(move |_| state),
            FrameRequestLayer::<FetchRequest>::new(),
        )
            .into_layer(LongPollFetch)
            .boxed(),
    )?;
    let state = coordinator.clone();
    builder = builder.with_route(
        ListGroupsRequest::KEY,
        (
            MapStateLayer::new(move |_| state),
            FrameRequestLayer::<ListGroupsRequest>::new(),
        )
            .into_layer(ListGroups)
            .boxed(),
    )?;
    let state = coordinator.clone();
    builder = builder.with_route(
        DescribeGroupsRequest::KEY,
        (
            MapStateLayer::new(move |_| state),
            FrameRequestLayer::<DescribeGroupsRequest>::new(),
        )
            .into_layer(DescribeGroups)
            .boxed(),
    )?;
    Ok(builder.build()?)
}

/// ListGroups from the coordinator's membership (tansu's reads its own group table, which this
/// coordinator does not write).
#[derive(Debug, Clone, Copy)]
struct ListGroups;

impl<S: Storage> Service<GroupCoordinator<S>, ListGroupsRequest> for ListGroups {
    type Response = ListGroupsResponse;
    type Error = tansu_broker::Error;

    async fn serve(
        &self,
        ctx: Context<GroupCoordinator<S>>,
        req: ListGroupsRequest,
    ) -> Result<Self::Response, Self::Error> {
        Ok(ctx.state().list_groups(req.states_filter.as_deref()))
    }
}

/// DescribeGroups from the coordinator's membership.
#[derive(Debug, Clone, Copy)]
struct DescribeGroups;

impl<S: Storage> Service<GroupCoordinator<S>, DescribeGroupsRequest> for DescribeGroups {
    type Response = DescribeGroupsResponse;
    type Error = tansu_broker::Error;

    async fn serve(
        &self,
        ctx: Context<GroupCoordinator<S>>,
        req: DescribeGroupsRequest,
    ) -> Result<Self::Response, Self::Error> {
        Ok(ctx
            .state()
            .describe_groups(req.groups.as_deref().unwrap_or_default()))
    }
}

/// Binds `addr` for [`serve`].
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
