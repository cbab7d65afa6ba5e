//! `/api/v1/wallet`: the account's wallet in the calling key's mode — its
//! balance, which pays for orders and renewals, and its ledger, newest
//! first, so a customer can see what was charged, refunded and credited.

use std::collections::HashMap;

use axum::extract::{Query, State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use advps_domain::{money, sandbox, time, Pagination};
use advps_store::LedgerEntry;

use crate::auth::Caller;
use crate::envelope::{ApiResponse, ErrorEnvelope, RequestContext, Success};
use crate::{ApiError, AppState};

/// The routes of this module; each path and method is the one its
/// handler's `#[utoipa::path]` declares.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_wallet))
}

/// What moved the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LedgerKind {
    /// Money added by the operator (or the sandbox's starting credit).
    Credit,
    /// An order paid.
    Purchase,
    /// A renewal paid.
    Renewal,
    /// An order that could not be provisioned, paid back.
    Refund,
}

impl LedgerKind {
    /// The stored word; an unknown one (a later version's) reads as a
    /// credit or a charge by its sign rather than failing the whole page.
    fn of(entry: &LedgerEntry) -> LedgerKind {
        match entry.kind.as_str() {
            "purchase" => LedgerKind::Purchase,
            "renewal" => LedgerKind::Renewal,
            "refund" => LedgerKind::Refund,
            "credit" => LedgerKind::Credit,
            _ if entry.amount_minor < 0 => LedgerKind::Purchase,
            _ => LedgerKind::Credit,
        }
    }
}

/// One movement of the balance.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryData {
    #[schema(example = 3)]
    pub id: i64,
    /// Signed: negative for a charge.
    #[schema(example = -12.5)]
    pub amount: f64,
    #[schema(example = "USD")]
    pub currency: String,
    pub kind: LedgerKind,
    /// The order it paid, renewed or refunded, if any.
    #[schema(example = "LXC011226-0001")]
    pub reference: Option<String>,
    pub note: Option<String>,
    #[schema(example = "2024-01-30T12:00:00.000Z")]
    pub created_at: String,
}

/// The balance and a page of the ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletData {
    /// What orders and renewals can spend now.
    #[schema(example = 87.5)]
    pub balance: f64,
    /// The currency of the newest ledger entry (the sandbox's when there is none).
    #[schema(example = "USD")]
    pub currency: String,
    /// Newest first.
    pub entries: Vec<LedgerEntryData>,
    #[schema(value_type = super::products::PageInfo)]
    pub pagination: Pagination,
}

#[utoipa::path(
    get,
    path = "/api/v1/wallet",
    tag = "Account",
    operation_id = "getWallet",
    summary = "Get Wallet",
    description = "The balance of the account's wallet in the calling key's mode (sandbox and live wallets are separate) and its ledger, newest first: credits, purchases, renewals and refunds. The balance is the sum of every entry.",
    params(
        ("page" = Option<u32>, Query, minimum = 1, description = "Page number of the ledger. Default: 1.", example = 1),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Entries per page, max 100: larger values are clamped. Default: 10.", example = 10),
    ),
    responses(
        (status = 200, description = "Wallet retrieved successfully", body = ApiResponse<WalletData>),
        (status = 400, description = "Invalid page value — must be a positive integer\nInvalid limit value — must be a positive integer", body = ErrorEnvelope),
    )
)]
pub async fn get_wallet(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Success, ApiError> {
    let page = super::page_of(&query)?;
    let wallet = state.ops.wallet(caller.scope(), page).await?;
    let currency = wallet
        .entries
        .first()
        .map(|e| e.currency.clone())
        .unwrap_or_else(|| sandbox::CURRENCY.to_string());
    let data = WalletData {
        balance: money::as_decimal(wallet.balance_minor),
        currency,
        entries: wallet
            .entries
            .iter()
            .map(|e| LedgerEntryData {
                id: e.id,
                amount: money::as_decimal(e.amount_minor),
                currency: e.currency.clone(),
                kind: LedgerKind::of(e),
                reference: e.reference.clone(),
                note: e.note.clone(),
                created_at: time::format_millis(e.created_at),
            })
            .collect(),
        pagination: Pagination::new(page, wallet.total),
    };
    Ok(Success::new(
        "Wallet retrieved successfully",
        data,
        caller.mode,
        &ctx,
    ))
}
