//! Selling services: the OS catalogue, purchases and their orders, renewal
//! and MAC resets. Money is integer minor units throughout.
//!
//! A purchase is checked completely (product, size, OS, quantity, validity,
//! customer details) before anything is charged; the store then takes the
//! machines, charges the wallet and records the order in one transaction,
//! and provisioning runs as one task per service (simulated in the sandbox,
//! by the worker on live nodes).

use advps_domain::{
    money, sandbox as catalogue, time, Mode, OsChoice, OsType, PageRequest, PowerState,
    ServiceType, VmType,
};
use advps_store::{
    LedgerEntry, NewOrder, OrderRecord, PlaceOrder, RenewItem, Renewal, Scope, ServiceRecord,
    DAY_MS,
};

use super::{Operations, OpsError, SERVICE_NOT_FOUND};
use crate::tasks::ProvisionParams;

const ORDER_NOT_FOUND: &str = "Order not found or not accessible";
/// Renewal is allowed from this long before expiry...
const RENEW_BEFORE_MS: i64 = 5 * DAY_MS;
/// ...to this long after it.
const RENEW_AFTER_MS: i64 = DAY_MS;
/// A MAC address may be reset once in this long.
pub const MAC_RESET_INTERVAL_MS: i64 = DAY_MS;
pub const MAX_QUANTITY: i64 = 10;
pub const MAX_VALIDITY_DAYS: i64 = 365;

/// One entry of the OS catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsEntry {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub os_type: OsType,
    /// The engine image (live only).
    pub image: Option<String>,
    /// The login name of services installed with it.
    pub username: String,
}

/// What kind of purchase endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseKind {
    Linux,
    Vps,
}

impl PurchaseKind {
    fn vm_type(self) -> VmType {
        match self {
            PurchaseKind::Linux => VmType::Lxc,
            PurchaseKind::Vps => VmType::Vps,
        }
    }

    fn service_type(self) -> ServiceType {
        match self {
            PurchaseKind::Linux => ServiceType::Linux,
            PurchaseKind::Vps => ServiceType::Vps,
        }
    }

    fn os_type(self) -> OsType {
        match self {
            PurchaseKind::Linux => OsType::Lxc,
            PurchaseKind::Vps => OsType::Vps,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            PurchaseKind::Linux => "LXC",
            PurchaseKind::Vps => "VPS",
        }
    }
}

/// Which OS a purchase asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsWanted {
    /// None named: the product's default.
    ProductDefault,
    Choice(OsChoice),
    /// Something that names no OS at all; refused like an OS of another
    /// family, once the product and size are known to be right.
    Unknown,
}

/// A purchase, its body checked: what is left to check needs the store
/// (the product, its sizes, its stock, the OS list, the wallet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub kind: PurchaseKind,
    pub product_id: String,
    pub ram_mb: i64,
    pub os: OsWanted,
    pub quantity: i64,
    pub validity_days: i64,
    pub remark: Option<String>,
    /// VPS purchases only.
    pub customer_name: Option<String>,
    /// VPS purchases only.
    pub customer_email: Option<String>,
}

/// A renewal, its body checked: the order, the services in the order they
/// were named (each once, at most [`MAX_RENEW`]), and the days of those
/// that do not take the order's validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewServices {
    pub order_id: String,
    pub service_ids: Vec<String>,
    pub validities: std::collections::HashMap<String, i64>,
}

/// Services one renewal may name.
pub const MAX_RENEW: usize = 50;

/// An order with its services, as `GET /purchase/{id}` shows it.
pub struct OrderView {
    pub order: OrderRecord,
    pub services: Vec<ServiceRecord>,
    /// Passwords, in the order of `services`; only once the order is final.
    pub passwords: Vec<Option<String>>,
}

/// The wallet as `GET /wallet` shows it: its balance and one page of its
/// ledger, newest first.
#[derive(Debug, Clone)]
pub struct Wallet {
    pub balance_minor: i64,
    pub entries: Vec<LedgerEntry>,
    /// How many ledger entries the wallet has in all.
    pub total: u64,
}

fn bad(message: impl Into<String>) -> OpsError {
    OpsError::invalid(message)
}

impl Operations {
    /// The OS images of a mode, optionally of one family.
    pub async fn os_catalogue(
        &self,
        mode: Mode,
        family: Option<OsType>,
    ) -> Result<Vec<OsEntry>, OpsError> {
        let mut entries = Vec::new();
        match mode {
            Mode::Test => {
                let mut id = 0;
                for os in catalogue::OS_IMAGES
                    .iter()
                    .filter(|o| o.slug != catalogue::FAILING_OS)
                {
                    for (available, os_type) in [(os.vps, OsType::Vps), (os.lxc, OsType::Lxc)] {
                        id += 1;
                        if available {
                            entries.push(OsEntry {
                                id,
                                slug: os.slug.to_string(),
                                name: os.name.to_string(),
                                os_type,
                                image: None,
                                username: os.username().to_string(),
                            });
                        }
                    }
                }
            }
            Mode::Live => {
                // One entry per slug and family: a mapping for every node wins
                // over a node's own, which would only be a duplicate here.
                let mut images = self.store.list_os_images().await?;
                images
                    .sort_by_key(|i| (i.slug.clone(), i.os_type.as_str(), i.node.is_some(), i.id));
                for image in images {
                    if entries
                        .iter()
                        .any(|e: &OsEntry| e.slug == image.slug && e.os_type == image.os_type)
                    {
                        continue;
                    }
                    let username = image.login_name();
                    entries.push(OsEntry {
                        username,
                        id: image.id,
                        slug: image.slug,
                        name: image.name,
                        os_type: image.os_type,
                        image: Some(image.image),
                    });
                }
            }
        }
        entries.retain(|e| family.is_none_or(|f| f == e.os_type));
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    /// Finds an OS of a family by its id (number) or slug (string).
    pub async fn resolve_os(
        &self,
        mode: Mode,
        family: OsType,
        wanted: &OsChoice,
    ) -> Result<Option<OsEntry>, OpsError> {
        let all = self.os_catalogue(mode, Some(family)).await?;
        Ok(all.into_iter().find(|e| match wanted {
            OsChoice::Id(id) => e.id == *id,
            OsChoice::Slug(slug) => e.slug == *slug,
        }))
    }

    pub async fn purchase(&self, scope: Scope, purchase: Purchase) -> Result<OrderView, OpsError> {
        let Purchase {
            kind,
            product_id,
            ram_mb,
            os,
            quantity,
            validity_days: validity,
            remark,
            customer_name,
            customer_email,
        } = purchase;
        let product_id = product_id.as_str();
        let product = self
            .store
            .find_product(scope.mode, product_id, Some(scope.account_id))
            .await?
            .ok_or(OpsError::NotFound("Product not found"))?;
        if product.vm_type != kind.vm_type() {
            return Err(bad(format!(
                "Product {product_id} is not a {} product",
                if kind == PurchaseKind::Linux {
                    "Linux"
                } else {
                    "VPS"
                }
            )));
        }
        let sizes = self.store.product_sizes(scope.mode, product_id).await?;
        let size = sizes.iter().find(|s| s.ram_mb == ram_mb).ok_or_else(|| OpsError::Validation {
            message: format!("RAM size {} is not available for this product", money::format_ram(ram_mb)),
            errors: Some(serde_json::json!({
                "available": sizes.iter().map(|s| money::format_ram(s.ram_mb)).collect::<Vec<_>>()
            })),
        })?;
        let unknown = || bad("Unknown osId for this product type");
        let os = match os {
            OsWanted::Unknown => return Err(unknown()),
            OsWanted::Choice(wanted) => self
                .resolve_os(scope.mode, kind.os_type(), &wanted)
                .await?
                .ok_or_else(unknown)?,
            OsWanted::ProductDefault => {
                let default = product
                    .default_os
                    .clone()
                    .unwrap_or_else(|| catalogue::DEFAULT_OS.to_string());
                self.resolve_os(scope.mode, kind.os_type(), &OsChoice::Slug(default))
                    .await?
                    .ok_or_else(|| {
                        OpsError::Failed("No OS templates available for the selected OS".into())
                    })?
            }
        };
        let amount = money::period_price(size.price_minor, validity, quantity);
        let now = time::now_millis();
        let (due_at, credentials) = match scope.mode {
            Mode::Test => {
                let credentials = (0..quantity)
                    .map(|_| {
                        (
                            self.cipher.encrypt(&advps_domain::password::generate()),
                            sandbox_address(),
                        )
                    })
                    .collect();
                (
                    Some(now + self.config.sandbox_provision_millis()),
                    credentials,
                )
            }
            Mode::Live => (None, Vec::new()),
        };
        // The sandbox's failure simulation rides on the OS, as for rebuilds.
        let os_slug =
            if scope.mode == Mode::Test && remark.as_deref() == Some(catalogue::FAILING_OS) {
                catalogue::FAILING_OS.to_string()
            } else {
                os.slug.clone()
            };
        let params = serde_json::to_string(&ProvisionParams {
            os: os_slug,
            os_name: os.name.clone(),
            image: os.image.clone(),
        })?;
        let order = NewOrder {
            scope,
            prefix: kind.prefix(),
            day: time::from_millis(now).format("%d%m%y").to_string(),
            product_id: product.id.clone(),
            service_type: kind.service_type(),
            ram_mb,
            os_slug: os.slug.clone(),
            os_name: os.name.clone(),
            username: os.username.clone(),
            quantity,
            validity_days: validity,
            amount_minor: amount,
            currency: size.currency.clone(),
            remark,
            customer_name,
            customer_email,
            task_params: params,
            due_at,
            sandbox_credentials: credentials,
            now,
        };
        match self.store.place_order(&order).await? {
            PlaceOrder::Placed { order, services } => {
                if scope.mode == Mode::Live {
                    self.wake.notify_one();
                }
                let passwords = vec![None; services.len()];
                Ok(OrderView {
                    order: *order,
                    services,
                    passwords,
                })
            }
            PlaceOrder::OutOfStock { available } => Err(OpsError::Conflict {
                message: "Product is out of stock".into(),
                errors: Some(serde_json::json!({ "available": available, "requested": quantity })),
            }),
            PlaceOrder::InsufficientFunds { balance } => Err(OpsError::Unpaid {
                message: "Insufficient wallet balance".into(),
                errors: Some(serde_json::json!({
                    "balance": money::as_decimal(balance),
                    "required": money::as_decimal(amount),
                    "currency": size.currency,
                })),
            }),
        }
    }

    pub async fn order(&self, scope: Scope, order_id: &str) -> Result<OrderView, OpsError> {
        let mut order = self
            .store
            .find_order(scope, order_id)
            .await?
            .ok_or(OpsError::NotFound(ORDER_NOT_FOUND))?;
        if self.settle_sandbox_order(scope, &order).await? {
            order = self
                .store
                .find_order(scope, order_id)
                .await?
                .ok_or(OpsError::NotFound(ORDER_NOT_FOUND))?;
        }
        let services = self.store.order_services(order_id).await?;
        let passwords = services
            .iter()
            .map(|s| {
                if order.status == "COMPLETED" {
                    s.password_enc
                        .as_deref()
                        .and_then(|p| self.cipher.decrypt(p).ok())
                } else {
                    None
                }
            })
            .collect();
        Ok(OrderView {
            order,
            services,
            passwords,
        })
    }

    /// Finishes the simulated provisioning of a pending sandbox order whose
    /// time is up, so that it reads the same whether it was polled or not;
    /// true when the order was pending (and so should be read again).
    async fn settle_sandbox_order(
        &self,
        scope: Scope,
        order: &OrderRecord,
    ) -> Result<bool, OpsError> {
        if order.status != "PENDING" || scope.mode != Mode::Test {
            return Ok(false);
        }
        let now = time::now_millis();
        for service in self.store.order_services(&order.id).await? {
            if let Some(task) = self.store.active_task(service.pk).await? {
                crate::sandbox::settle(self.store.as_ref(), &task, now).await?;
            }
        }
        Ok(true)
    }

    /// `GET /orders`: a page of the account's orders, newest first, and how
    /// many there are.
    pub async fn orders(
        &self,
        scope: Scope,
        page: PageRequest,
    ) -> Result<(Vec<OrderRecord>, u64), OpsError> {
        let (mut orders, total) = self
            .store
            .page_orders(scope, page.offset(), page.limit)
            .await?;
        for order in &mut orders {
            if self.settle_sandbox_order(scope, order).await? {
                if let Some(fresh) = self.store.find_order(scope, &order.id).await? {
                    *order = fresh;
                }
            }
        }
        Ok((orders, total))
    }

    /// `GET /wallet`: the balance and a page of the ledger, newest first.
    pub async fn wallet(&self, scope: Scope, page: PageRequest) -> Result<Wallet, OpsError> {
        let balance_minor = self
            .store
            .wallet_balance(scope.account_id, scope.mode)
            .await?;
        let (entries, total) = self
            .store
            .page_ledger(scope, page.offset(), page.limit)
            .await?;
        Ok(Wallet {
            balance_minor,
            entries,
            total,
        })
    }

    /// `POST /services/renew`.
    pub async fn renew(
        &self,
        scope: Scope,
        renewal: RenewServices,
    ) -> Result<(String, Vec<ServiceRecord>, i64, String), OpsError> {
        let RenewServices {
            order_id,
            service_ids: ids,
            validities,
        } = renewal;
        let order_id = order_id.as_str();
        let order = self
            .store
            .find_order(scope, order_id)
            .await?
            .ok_or(OpsError::NotFound(ORDER_NOT_FOUND))?;
        let now = time::now_millis();
        let mut items = Vec::new();
        let mut services = Vec::new();
        let mut currency = order.currency.clone();
        for id in &ids {
            let service = self.service(scope, id).await?;
            if service.order_id.as_deref() != Some(order_id) {
                return Err(bad(format!(
                    "Service {id} does not belong to order {order_id}"
                )));
            }
            if service.power_state.is_busy() {
                return Err(self.busy(&service).await);
            }
            let expires = service.expires_at.unwrap_or(now);
            if now < expires - RENEW_BEFORE_MS || now > expires + RENEW_AFTER_MS {
                return Err(OpsError::Validation {
                    message: format!(
                        "Service {id} can be renewed from 5 days before to 1 day after its expiry ({})",
                        time::format_millis(expires)
                    ),
                    errors: Some(serde_json::json!({ "serviceId": id, "expiryDate": time::format_millis(expires) })),
                });
            }
            let (product_id, ram_mb) = match (&service.product_id, service.ram_mb) {
                (Some(p), Some(r)) => (p.clone(), r),
                _ => return Err(bad(format!("Service {id} has no price to renew at"))),
            };
            let size = self
                .store
                .product_sizes(scope.mode, &product_id)
                .await?
                .into_iter()
                .find(|s| s.ram_mb == ram_mb)
                .ok_or_else(|| bad(format!("Service {id} has no price to renew at")))?;
            currency = size.currency.clone();
            let days = validities.get(id).copied().unwrap_or(order.validity_days);
            items.push(RenewItem {
                service_pk: service.pk,
                validity_days: days,
                amount_minor: money::period_price(size.price_minor, days, 1),
            });
            services.push(service);
        }
        let total: i64 = items.iter().map(|i| i.amount_minor).sum();
        let renewed = match self
            .store
            .renew_services(scope, &items, &currency, order_id, now)
            .await?
        {
            Renewal::Renewed(renewed) => renewed,
            Renewal::InsufficientFunds { balance } => {
                return Err(OpsError::Unpaid {
                    message: "Insufficient wallet balance".into(),
                    errors: Some(serde_json::json!({
                        "balance": money::as_decimal(balance),
                        "required": money::as_decimal(total),
                        "currency": currency,
                    })),
                })
            }
        };
        // A service that was suspended comes back up.
        for (before, after) in services.iter().zip(&renewed) {
            if before.power_state == PowerState::Suspended {
                let _ = self.start(scope, &after.service_id).await;
            }
        }
        let mut current = Vec::new();
        for s in &renewed {
            current.push(self.service(scope, &s.service_id).await?);
        }
        Ok((order_id.to_string(), current, total, currency))
    }

    /// `POST /services/{id}/reset-mac`: VPS only, once a day.
    pub async fn reset_mac(
        &self,
        scope: Scope,
        service_id: &str,
    ) -> Result<(ServiceRecord, String), OpsError> {
        let service = self.service(scope, service_id).await?;
        if service.service_type != ServiceType::Vps {
            return Err(OpsError::NotFound(SERVICE_NOT_FOUND));
        }
        self.usable(&service).await?;
        let now = time::now_millis();
        let previous = service.last_mac_reset;
        if let Err(next) = self
            .store
            .claim_mac_reset(service.pk, now, MAC_RESET_INTERVAL_MS)
            .await?
        {
            return Err(OpsError::TooSoon {
                message: "The MAC address can be reset once every 24 hours".into(),
                retry_after_secs: ((next - now + 999) / 1000).max(1) as u64,
            });
        }
        let result = match service.mode {
            Mode::Test => Ok(random_mac()),
            Mode::Live => self.live_reset_mac(&service).await,
        };
        match result {
            Ok(mac) => {
                self.store.set_service_mac(service.pk, &mac).await?;
                Ok((service, mac))
            }
            Err(e) => {
                // Not done: the daily allowance is not used up.
                self.store.restore_mac_reset(service.pk, previous).await?;
                Err(e)
            }
        }
    }
}

/// A locally administered unicast MAC address.
pub fn random_mac() -> String {
    use rand::Rng;
    let mut bytes: [u8; 6] = rand::rngs::OsRng.gen();
    bytes[0] = (bytes[0] & 0xfc) | 0x02;
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An address for a simulated service (documentation range, never routed).
fn sandbox_address() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    format!("203.0.113.{}", rng.gen_range(2..255))
}

pub fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
                && s.len() <= 254
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(is_email("ops@example.com"));
        assert!(!is_email("ops@example"));
        assert!(!is_email("@example.com"));
        assert!(!is_email("a b@example.com"));
    }

    #[test]
    fn macs_are_local_unicast() {
        let mac = random_mac();
        assert_eq!(mac.len(), 17);
        let first = u8::from_str_radix(&mac[0..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02);
    }
}
