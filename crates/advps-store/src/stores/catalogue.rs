//! The catalogue: products with their stock, sizes and prices, and OS images.
//!
//! The trait and its one implementation, on both databases.

use advps_domain::{Mode, VmType};
use async_trait::async_trait;

use crate::db::{query, Query};
use crate::model::*;
use crate::stores::shared::{emit_stock_changed, PRODUCT_SELECT};
use crate::{SqlStore, StoreResult};

/// The catalogue: products with their stock, sizes and prices, and OS images.
#[async_trait]
pub trait CatalogueStore: Send + Sync {
    /// Inserts products that do not exist yet; existing ones are left as they are.
    async fn ensure_products(&self, products: &[NewProduct]) -> StoreResult<()>;

    /// Creates a product; an existing id in that mode is [`StoreError::Conflict`].
    async fn create_product(&self, product: &NewProduct) -> StoreResult<()>;

    /// Visible products of a mode with their stock, sorted by stock
    /// descending then id, and the total count.
    /// Sandbox stock is per account: what the account bought is taken off
    /// the catalogue's figure, so testers do not see each other's purchases.
    async fn list_products(
        &self,
        mode: Mode,
        vm_type: Option<VmType>,
        offset: u64,
        limit: u32,
        account_id: Option<i64>,
    ) -> StoreResult<(Vec<ProductStock>, u64)>;

    async fn find_product(
        &self,
        mode: Mode,
        id: &str,
        account_id: Option<i64>,
    ) -> StoreResult<Option<ProductStock>>;

    /// Adds or replaces a RAM size of a product with its price.
    async fn set_product_size(
        &self,
        mode: Mode,
        product_id: &str,
        size: &ProductSize,
    ) -> StoreResult<()>;

    async fn product_sizes(&self, mode: Mode, product_id: &str) -> StoreResult<Vec<ProductSize>>;

    async fn set_product_default_os(
        &self,
        mode: Mode,
        product_id: &str,
        slug: Option<&str>,
    ) -> StoreResult<bool>;

    /// Sets (`Some`) or clears (`None`, stock derived from inventory) the
    /// manual stock; false when there is no such product.
    async fn set_manual_stock(&self, mode: Mode, id: &str, stock: Option<i64>)
        -> StoreResult<bool>;

    async fn add_os_image(&self, image: &NewOsImage) -> StoreResult<()>;

    async fn list_os_images(&self) -> StoreResult<Vec<OsImageRecord>>;

    async fn os_images_by_slug(&self, slug: &str) -> StoreResult<Vec<OsImageRecord>>;

    /// Shows (`true`) or hides a product: a hidden product is left out of
    /// the catalogue's lists and cannot be bought, but keeps its services.
    /// False when there is no such product.
    async fn set_product_visible(&self, mode: Mode, id: &str, visible: bool) -> StoreResult<bool>;

    /// The ids of a mode's hidden products, sorted.
    async fn hidden_products(&self, mode: Mode) -> StoreResult<Vec<String>>;

    /// Deletes a product with its sizes; refused while a service or an
    /// instance of the inventory names it.
    async fn remove_product(&self, mode: Mode, id: &str) -> StoreResult<Removal>;

    /// Deletes every mapping of an OS slug (all types and nodes); refused
    /// while a service runs it or a product installs it by default.
    async fn remove_os(&self, slug: &str) -> StoreResult<Removal>;
}

/// The insert of a product; `if_absent` leaves an existing one as it is
/// instead of failing on it.
fn insert_product(p: &NewProduct, if_absent: bool) -> Query<'static> {
    let conflict = if if_absent {
        " ON CONFLICT (mode, id) DO NOTHING"
    } else {
        ""
    };
    query(format!(
        "INSERT INTO products (mode, id, name, pack_name, vm_type, manual_stock, \
         low_stock_threshold, default_os, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9){conflict}"
    ))
    .bind(p.mode.as_str())
    .bind(&p.id)
    .bind(&p.name)
    .bind(&p.pack_name)
    .bind(p.vm_type.as_str())
    .bind(p.manual_stock)
    .bind(p.low_stock_threshold)
    .bind(&p.default_os)
    .bind(p.now)
}

/// The columns of an OS image; an image for every node is stored with
/// node `''` (so that the unique key covers it) and read as `None`.
const OS_IMAGE_SELECT: &str =
    "SELECT id, slug, name, os_type, image, NULLIF(node, '') AS node, username FROM os_images";

#[async_trait]
impl CatalogueStore for SqlStore {
    async fn ensure_products(&self, products: &[NewProduct]) -> StoreResult<()> {
        let mut tx = self.db.begin_uncached().await?;
        for p in products {
            insert_product(p, true).execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_product(&self, product: &NewProduct) -> StoreResult<()> {
        insert_product(product, false)
            .execute(self.db.write_uncached())
            .await
            .map_err(|e| e.on_write(format!("product '{}'", product.id)))?;
        Ok(())
    }

    async fn list_products(
        &self,
        mode: Mode,
        vm_type: Option<VmType>,
        offset: u64,
        limit: u32,
        account_id: Option<i64>,
    ) -> StoreResult<(Vec<ProductStock>, u64)> {
        let type_filter = vm_type.map(VmType::as_str);
        let total: i64 = query(
            "SELECT COUNT(*) FROM products WHERE mode = $1 AND visible = TRUE \
             AND (CAST($2 AS TEXT) IS NULL OR vm_type = $2)",
        )
        .bind(mode.as_str())
        .bind(type_filter)
        .scalar(self.db.read())
        .await?;
        // An offset past the end needs no query; it also keeps huge offsets
        // out of the databases' signed 64-bit OFFSET.
        if offset >= total as u64 {
            return Ok((Vec::new(), total as u64));
        }
        let products = query(format!(
            "{PRODUCT_SELECT} WHERE p.mode = $2 AND p.visible = TRUE \
             AND (CAST($3 AS TEXT) IS NULL OR p.vm_type = $3) \
             ORDER BY stock DESC, p.id COLLATE \"C\" ASC LIMIT $4 OFFSET $5"
        ))
        .bind(account_id.unwrap_or(0))
        .bind(mode.as_str())
        .bind(type_filter)
        .bind(i64::from(limit))
        .bind(offset as i64)
        .fetch_all(self.db.read())
        .await?;
        Ok((products, total as u64))
    }

    async fn find_product(
        &self,
        mode: Mode,
        id: &str,
        account_id: Option<i64>,
    ) -> StoreResult<Option<ProductStock>> {
        query(format!(
            "{PRODUCT_SELECT} WHERE p.mode = $2 AND p.id = $3 AND p.visible = TRUE"
        ))
        .bind(account_id.unwrap_or(0))
        .bind(mode.as_str())
        .bind(id)
        .fetch_optional(self.db.read())
        .await
    }

    async fn set_product_size(
        &self,
        mode: Mode,
        product_id: &str,
        size: &ProductSize,
    ) -> StoreResult<()> {
        query(
            "INSERT INTO product_sizes (mode, product_id, ram_mb, price_minor, currency) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (mode, product_id, ram_mb) DO UPDATE \
             SET price_minor = excluded.price_minor, currency = excluded.currency",
        )
        .bind(mode.as_str())
        .bind(product_id)
        .bind(size.ram_mb)
        .bind(size.price_minor)
        .bind(&size.currency)
        .execute(self.db.write_uncached())
        .await?;
        Ok(())
    }

    async fn product_sizes(&self, mode: Mode, product_id: &str) -> StoreResult<Vec<ProductSize>> {
        query(
            "SELECT ram_mb, price_minor, currency FROM product_sizes \
             WHERE mode = $1 AND product_id = $2 ORDER BY ram_mb",
        )
        .bind(mode.as_str())
        .bind(product_id)
        .fetch_all(self.db.read())
        .await
    }

    async fn set_product_default_os(
        &self,
        mode: Mode,
        product_id: &str,
        slug: Option<&str>,
    ) -> StoreResult<bool> {
        let done = query("UPDATE products SET default_os = $1 WHERE mode = $2 AND id = $3")
            .bind(slug)
            .bind(mode.as_str())
            .bind(product_id)
            .execute(self.db.write_uncached())
            .await?;
        Ok(done == 1)
    }

    async fn set_manual_stock(
        &self,
        mode: Mode,
        id: &str,
        stock: Option<i64>,
    ) -> StoreResult<bool> {
        let mut tx = self.db.begin_uncached().await?;
        let done = query("UPDATE products SET manual_stock = $1 WHERE mode = $2 AND id = $3")
            .bind(stock)
            .bind(mode.as_str())
            .bind(id)
            .execute(&mut tx)
            .await?;
        let changed = done == 1;
        // Sandbox stock is per account, so a change of the catalogue's
        // figure has no one audience to tell; live stock is everyone's.
        if changed && mode == Mode::Live {
            emit_stock_changed(&mut tx, 0, mode, id, advps_domain::time::now_millis()).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn add_os_image(&self, image: &NewOsImage) -> StoreResult<()> {
        query(
            "INSERT INTO os_images (slug, name, os_type, image, node, username, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&image.slug)
        .bind(&image.name)
        .bind(image.os_type.as_str())
        .bind(&image.image)
        .bind(image.node.as_deref().unwrap_or(""))
        .bind(&image.username)
        .bind(image.now)
        .execute(self.db.write_uncached())
        .await
        .map_err(|e| e.on_write(format!("OS image '{}' ({})", image.slug, image.os_type)))?;
        Ok(())
    }

    async fn list_os_images(&self) -> StoreResult<Vec<OsImageRecord>> {
        query(format!(
            "{OS_IMAGE_SELECT} \
             ORDER BY slug COLLATE \"C\", os_type COLLATE \"C\", os_images.node COLLATE \"C\""
        ))
        .fetch_all(self.db.read())
        .await
    }

    async fn os_images_by_slug(&self, slug: &str) -> StoreResult<Vec<OsImageRecord>> {
        query(format!(
            "{OS_IMAGE_SELECT} WHERE slug = $1 \
             ORDER BY os_type COLLATE \"C\", os_images.node COLLATE \"C\""
        ))
        .bind(slug)
        .fetch_all(self.db.read())
        .await
    }

    async fn set_product_visible(&self, mode: Mode, id: &str, visible: bool) -> StoreResult<bool> {
        let mut tx = self.db.begin_uncached().await?;
        let done = query("UPDATE products SET visible = $1 WHERE mode = $2 AND id = $3")
            .bind(visible)
            .bind(mode.as_str())
            .bind(id)
            .execute(&mut tx)
            .await?;
        // Watchers of live stock learn that the product came or went.
        if done == 1 && mode == Mode::Live {
            emit_stock_changed(&mut tx, 0, mode, id, advps_domain::time::now_millis()).await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn hidden_products(&self, mode: Mode) -> StoreResult<Vec<String>> {
        let rows = query(
            "SELECT id FROM products WHERE mode = $1 AND visible = FALSE ORDER BY id COLLATE \"C\"",
        )
        .bind(mode.as_str())
        .rows(self.db.read())
        .await?;
        rows.iter().map(|r| r.get::<String>("id")).collect()
    }

    async fn remove_product(&self, mode: Mode, id: &str) -> StoreResult<Removal> {
        let mut tx = self.db.begin_uncached().await?;
        // The product's row is locked first, as a purchase of it would.
        let sql = format!(
            "SELECT id FROM products WHERE mode = $1 AND id = $2{}",
            tx.dialect().lock_for_delete()
        );
        if query(sql)
            .bind(mode.as_str())
            .bind(id)
            .row_opt(&mut tx)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(Removal::NotFound);
        }
        let services: i64 =
            query("SELECT COUNT(*) FROM services WHERE mode = $1 AND product_id = $2")
                .bind(mode.as_str())
                .bind(id)
                .scalar(&mut tx)
                .await?;
        // The inventory is live only: sandbox products have no machines.
        let instances: i64 = if mode == Mode::Live {
            query("SELECT COUNT(*) FROM instances WHERE product_id = $1")
                .bind(id)
                .scalar(&mut tx)
                .await?
        } else {
            0
        };
        let users: Vec<String> = [
            count_of(services, "service", "services"),
            count_of(
                instances,
                "instance of the inventory",
                "instances of the inventory",
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !users.is_empty() {
            tx.rollback().await?;
            return Ok(Removal::InUse(users.join(" and ")));
        }
        query("DELETE FROM product_sizes WHERE mode = $1 AND product_id = $2")
            .bind(mode.as_str())
            .bind(id)
            .execute(&mut tx)
            .await?;
        query("DELETE FROM products WHERE mode = $1 AND id = $2")
            .bind(mode.as_str())
            .bind(id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Removal::Removed)
    }

    async fn remove_os(&self, slug: &str) -> StoreResult<Removal> {
        let mut tx = self.db.begin_uncached().await?;
        let sql = format!(
            "SELECT id FROM os_images WHERE slug = $1{}",
            tx.dialect().lock_for_delete()
        );
        if query(sql).bind(slug).rows(&mut tx).await?.is_empty() {
            tx.rollback().await?;
            return Ok(Removal::NotFound);
        }
        // The mappings serve live mode; the sandbox's OS list is its own.
        let services: i64 =
            query("SELECT COUNT(*) FROM services WHERE mode = 'live' AND os_slug = $1")
                .bind(slug)
                .scalar(&mut tx)
                .await?;
        let products: i64 =
            query("SELECT COUNT(*) FROM products WHERE mode = 'live' AND default_os = $1")
                .bind(slug)
                .scalar(&mut tx)
                .await?;
        let users: Vec<String> = [
            count_of(services, "service", "services"),
            count_of(products, "product's default", "products' default"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !users.is_empty() {
            tx.rollback().await?;
            return Ok(Removal::InUse(users.join(" and ")));
        }
        query("DELETE FROM os_images WHERE slug = $1")
            .bind(slug)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Removal::Removed)
    }
}
