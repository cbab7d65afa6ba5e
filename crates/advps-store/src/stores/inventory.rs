//! Inventory: nodes, the instances they report, and IP pools with their addresses.
//!
//! The trait and its one implementation, on both databases.

use async_trait::async_trait;

use crate::db::{query, Tx};
use crate::model::*;
use crate::{SqlStore, StoreResult};

/// Inventory: nodes, the instances they report, and IP pools with their addresses.
#[async_trait]
pub trait InventoryStore: Send + Sync {
    /// Registers a node; an existing name is [`StoreError::Conflict`].
    async fn create_node(&self, node: &NewNode) -> StoreResult<NodeRecord>;

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>>;

    async fn find_node(&self, name: &str) -> StoreResult<Option<NodeRecord>>;

    /// Replaces a node's sealed credentials (e.g. to give or take SSH access
    /// later); `false` when no node has that name.
    async fn set_node_credentials(
        &self,
        name: &str,
        credentials_enc: Option<&str>,
    ) -> StoreResult<bool>;

    /// Records what a node reports: new instances are added free, known
    /// ones updated, and known ones the node no longer has marked unhealthy.
    async fn sync_instances(
        &self,
        node: &str,
        seen: &[SyncedInstance],
        now: i64,
    ) -> StoreResult<SyncSummary>;

    async fn list_instances(&self, node: Option<&str>) -> StoreResult<Vec<InstanceRecord>>;

    async fn find_instance(
        &self,
        node: &str,
        engine_id: &str,
    ) -> StoreResult<Option<InstanceRecord>>;

    async fn add_instance(&self, instance: &NewInstance) -> StoreResult<i64>;

    /// Assigns an instance to a product (stock is counted per product).
    async fn set_instance_product(
        &self,
        instance_id: i64,
        product_id: Option<&str>,
    ) -> StoreResult<bool>;

    /// Puts an instance back in inventory (`free`) or out of it.
    async fn set_instance_state(&self, instance_id: i64, state: &str) -> StoreResult<()>;

    /// Creates a pool with all its addresses; a name or address that exists
    /// is [`StoreError::Conflict`].
    async fn create_ip_pool(&self, pool: &NewIpPool) -> StoreResult<IpPoolRecord>;

    async fn list_ip_pools(&self) -> StoreResult<Vec<IpPoolRecord>>;

    /// The service's address, taking a free one atomically (from the node's
    /// pools first, then pools for every node) if it has none. `None` when
    /// every pool is exhausted.
    async fn allocate_address(
        &self,
        service_pk: i64,
        node: &str,
        now: i64,
    ) -> StoreResult<Option<AddressLease>>;

    async fn service_address(&self, service_pk: i64) -> StoreResult<Option<AddressLease>>;

    /// Gives the service's addresses back to their pools.
    async fn release_addresses(&self, service_pk: i64) -> StoreResult<u64>;

    /// Deletes a pool with its addresses; refused while one is assigned.
    async fn remove_ip_pool(&self, name: &str) -> StoreResult<Removal>;
}

/// An address with what configuring it needs; `a` is `ip_addresses`, `p`
/// its pool.
const LEASE_SELECT: &str =
    "SELECT a.id AS address_id, a.address, p.prefix, p.gateway, p.name AS pool \
     FROM ip_addresses a JOIN ip_pools p ON p.id = a.pool_id";

/// Brings a known instance up to date with what its node reports; false
/// when the node's instance is not known yet.
async fn update_synced(
    tx: &mut Tx,
    node: &str,
    instance: &SyncedInstance,
    now: i64,
) -> StoreResult<bool> {
    let updated = query(
        "UPDATE instances SET kind = $1, memory_mb = $2, engine_state = $3, healthy = TRUE, \
         updated_at = $4 WHERE node = $5 AND engine_id = $6",
    )
    .bind(&instance.kind)
    .bind(instance.memory_mb)
    .bind(&instance.engine_state)
    .bind(now)
    .bind(node)
    .bind(&instance.engine_id)
    .execute(&mut *tx)
    .await?;
    Ok(updated == 1)
}

#[async_trait]
impl InventoryStore for SqlStore {
    async fn create_node(&self, node: &NewNode) -> StoreResult<NodeRecord> {
        query(
            "INSERT INTO nodes (name, driver, endpoint, credentials_enc, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, name, driver, endpoint, credentials_enc, created_at",
        )
        .bind(&node.name)
        .bind(&node.driver)
        .bind(&node.endpoint)
        .bind(&node.credentials_enc)
        .bind(node.now)
        .fetch_one(self.db.write_uncached())
        .await
        .map_err(|e| e.on_write(format!("node '{}'", node.name)))
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        query("SELECT * FROM nodes ORDER BY name COLLATE \"C\"")
            .fetch_all(self.db.read())
            .await
    }

    async fn find_node(&self, name: &str) -> StoreResult<Option<NodeRecord>> {
        query("SELECT * FROM nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db.read())
            .await
    }

    async fn set_node_credentials(
        &self,
        name: &str,
        credentials_enc: Option<&str>,
    ) -> StoreResult<bool> {
        let done = query("UPDATE nodes SET credentials_enc = $1 WHERE name = $2")
            .bind(credentials_enc)
            .bind(name)
            .execute(self.db.write_uncached())
            .await?;
        Ok(done > 0)
    }

    async fn sync_instances(
        &self,
        node: &str,
        seen: &[SyncedInstance],
        now: i64,
    ) -> StoreResult<SyncSummary> {
        let mut tx = self.db.begin_uncached().await?;
        let mut summary = SyncSummary::default();
        for instance in seen {
            if update_synced(&mut tx, node, instance, now).await? {
                summary.updated += 1;
                continue;
            }
            // Another instance of advps may be syncing the same node: if it
            // inserted the row first, this becomes an update of that row.
            let inserted = query(
                "INSERT INTO instances (node, engine_id, kind, memory_mb, engine_state, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (node, engine_id) DO NOTHING",
            )
            .bind(node)
            .bind(&instance.engine_id)
            .bind(&instance.kind)
            .bind(instance.memory_mb)
            .bind(&instance.engine_state)
            .bind(now)
            .execute(&mut tx)
            .await?;
            if inserted == 1 {
                summary.added += 1;
            } else {
                update_synced(&mut tx, node, instance, now).await?;
                summary.updated += 1;
            }
        }
        // Whatever the node did not report is gone from it: not healthy, not
        // in stock. One statement, so that it is decided on the rows as they
        // are when it runs, whoever else is syncing.
        let mut sql = String::from(
            "UPDATE instances SET healthy = FALSE, engine_state = 'missing', updated_at = $1 \
             WHERE node = $2 AND healthy = TRUE",
        );
        if !seen.is_empty() {
            let reported: Vec<String> = (0..seen.len()).map(|i| format!("${}", i + 3)).collect();
            sql.push_str(&format!(" AND engine_id NOT IN ({})", reported.join(", ")));
        }
        let mut missing = query(sql).bind(now).bind(node);
        for instance in seen {
            missing = missing.bind(&instance.engine_id);
        }
        summary.missing = missing.execute(&mut tx).await?;
        tx.commit().await?;
        Ok(summary)
    }

    async fn list_instances(&self, node: Option<&str>) -> StoreResult<Vec<InstanceRecord>> {
        query(
            "SELECT * FROM instances WHERE (CAST($1 AS TEXT) IS NULL OR node = $1) \
             ORDER BY node COLLATE \"C\", engine_id COLLATE \"C\"",
        )
        .bind(node)
        .fetch_all(self.db.read())
        .await
    }

    async fn find_instance(
        &self,
        node: &str,
        engine_id: &str,
    ) -> StoreResult<Option<InstanceRecord>> {
        query("SELECT * FROM instances WHERE node = $1 AND engine_id = $2")
            .bind(node)
            .bind(engine_id)
            .fetch_optional(self.db.read())
            .await
    }

    async fn add_instance(&self, instance: &NewInstance) -> StoreResult<i64> {
        query(
            "INSERT INTO instances (node, engine_id, product_id, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(&instance.node)
        .bind(&instance.engine_id)
        .bind(&instance.product_id)
        .bind(instance.now)
        .scalar(self.db.write_uncached())
        .await
        .map_err(|e| e.on_write(format!("instance '{}'", instance.engine_id)))
    }

    async fn set_instance_product(
        &self,
        instance_id: i64,
        product_id: Option<&str>,
    ) -> StoreResult<bool> {
        let done = query("UPDATE instances SET product_id = $1 WHERE id = $2")
            .bind(product_id)
            .bind(instance_id)
            .execute(self.db.write_uncached())
            .await?;
        Ok(done == 1)
    }

    async fn set_instance_state(&self, instance_id: i64, state: &str) -> StoreResult<()> {
        query("UPDATE instances SET state = $1 WHERE id = $2")
            .bind(state)
            .bind(instance_id)
            .execute(self.db.write_uncached())
            .await?;
        Ok(())
    }

    async fn create_ip_pool(&self, pool: &NewIpPool) -> StoreResult<IpPoolRecord> {
        let mut tx = self.db.begin_uncached().await?;
        let id: i64 = query(
            "INSERT INTO ip_pools (name, cidr, prefix, gateway, node, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&pool.name)
        .bind(&pool.cidr)
        .bind(i64::from(pool.prefix))
        .bind(&pool.gateway)
        .bind(pool.node.as_deref().unwrap_or(""))
        .bind(pool.now)
        .scalar(&mut tx)
        .await
        .map_err(|e| e.on_write(format!("IP pool '{}'", pool.name)))?;
        for address in &pool.addresses {
            query("INSERT INTO ip_addresses (pool_id, address) VALUES ($1, $2)")
                .bind(id)
                .bind(address)
                .execute(&mut tx)
                .await
                .map_err(|e| e.on_write(format!("address {address} (already in another pool)")))?;
        }
        tx.commit().await?;
        Ok(IpPoolRecord {
            id,
            name: pool.name.clone(),
            cidr: pool.cidr.clone(),
            prefix: pool.prefix,
            gateway: pool.gateway.clone(),
            node: pool.node.clone(),
            total: pool.addresses.len() as i64,
            free: pool.addresses.len() as i64,
        })
    }

    async fn list_ip_pools(&self) -> StoreResult<Vec<IpPoolRecord>> {
        // A pool for every node is stored with node '' and read as `None`.
        query(
            "SELECT p.id, p.name, p.cidr, p.prefix, p.gateway, NULLIF(p.node, '') AS node, \
             (SELECT COUNT(*) FROM ip_addresses a WHERE a.pool_id = p.id) AS total, \
             (SELECT COUNT(*) FROM ip_addresses a WHERE a.pool_id = p.id \
                AND a.service_pk IS NULL) AS free \
             FROM ip_pools p ORDER BY p.name COLLATE \"C\"",
        )
        .fetch_all(self.db.read())
        .await
    }

    async fn allocate_address(
        &self,
        service_pk: i64,
        node: &str,
        now: i64,
    ) -> StoreResult<Option<AddressLease>> {
        let mut tx = self.db.begin().await?;
        // One allocation per service at a time: a concurrent call for the
        // same service waits here, then finds the address this one took.
        let lock = format!(
            "SELECT pk FROM services WHERE pk = $1{}",
            tx.dialect().lock_rows()
        );
        query(lock).bind(service_pk).rows(&mut tx).await?;
        if let Some(lease) = query(format!(
            "{LEASE_SELECT} WHERE a.service_pk = $1 ORDER BY a.id LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional::<AddressLease>(&mut tx)
        .await?
        {
            tx.rollback().await?;
            return Ok(Some(lease));
        }
        // The node's own pools first, then pools for every node; lowest
        // address first. SKIP LOCKED: an address another allocation holds is
        // passed over for the next free one rather than waited for (and then
        // found taken), so concurrent allocations get distinct addresses.
        // Only the address is in FROM, so only its row is locked: a locked
        // pool row would make every other address of the pool skipped.
        let free = format!(
            "SELECT a.id FROM ip_addresses a WHERE a.service_pk IS NULL \
             AND a.pool_id IN (SELECT p.id FROM ip_pools p WHERE p.node = $1 OR p.node = '') \
             ORDER BY (SELECT CASE WHEN p.node = '' THEN 1 ELSE 0 END FROM ip_pools p \
                WHERE p.id = a.pool_id), a.id LIMIT 1{}",
            tx.dialect().skip_locked()
        );
        let Some(id) = query(free).bind(node).scalar_opt::<i64>(&mut tx).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let lease: AddressLease = query(format!("{LEASE_SELECT} WHERE a.id = $1"))
            .bind(id)
            .fetch_one(&mut tx)
            .await?;
        query(
            "UPDATE ip_addresses SET service_pk = $1, assigned_at = $2 \
             WHERE id = $3 AND service_pk IS NULL",
        )
        .bind(service_pk)
        .bind(now)
        .bind(id)
        .execute(&mut tx)
        .await?;
        query("UPDATE services SET ip = $1 WHERE pk = $2")
            .bind(&lease.address)
            .bind(service_pk)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Some(lease))
    }

    async fn service_address(&self, service_pk: i64) -> StoreResult<Option<AddressLease>> {
        query(format!(
            "{LEASE_SELECT} WHERE a.service_pk = $1 ORDER BY a.id LIMIT 1"
        ))
        .bind(service_pk)
        .fetch_optional(self.db.read())
        .await
    }

    async fn release_addresses(&self, service_pk: i64) -> StoreResult<u64> {
        let mut tx = self.db.begin().await?;
        let lock = format!(
            "SELECT pk FROM services WHERE pk = $1{}",
            tx.dialect().lock_rows()
        );
        query(lock).bind(service_pk).rows(&mut tx).await?;
        let released = query(
            "UPDATE ip_addresses SET service_pk = NULL, assigned_at = NULL WHERE service_pk = $1",
        )
        .bind(service_pk)
        .execute(&mut tx)
        .await?;
        query("UPDATE services SET ip = NULL WHERE pk = $1")
            .bind(service_pk)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn remove_ip_pool(&self, name: &str) -> StoreResult<Removal> {
        let mut tx = self.db.begin_uncached().await?;
        // Locking the pool's addresses keeps an allocation from taking one
        // between the count and the delete.
        let pool: Option<i64> = query("SELECT id FROM ip_pools WHERE name = $1")
            .bind(name)
            .scalar_opt(&mut tx)
            .await?;
        let Some(pool_id) = pool else {
            tx.rollback().await?;
            return Ok(Removal::NotFound);
        };
        let sql = format!(
            "SELECT service_pk FROM ip_addresses WHERE pool_id = $1{}",
            tx.dialect().lock_for_delete()
        );
        let rows = query(sql).bind(pool_id).rows(&mut tx).await?;
        let mut assigned = 0i64;
        for row in &rows {
            if row.get::<Option<i64>>("service_pk")?.is_some() {
                assigned += 1;
            }
        }
        if let Some(users) = count_of(assigned, "assigned address", "assigned addresses") {
            tx.rollback().await?;
            return Ok(Removal::InUse(users));
        }
        query("DELETE FROM ip_addresses WHERE pool_id = $1")
            .bind(pool_id)
            .execute(&mut tx)
            .await?;
        query("DELETE FROM ip_pools WHERE id = $1")
            .bind(pool_id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Removal::Removed)
    }
}
