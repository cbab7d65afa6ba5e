//! The ADVPS domain: the words of the API and the rules that need no I/O.
//!
//! Everything here is plain data and pure functions (apart from drawing random
//! numbers for keys and passwords from the operating system): API modes, service
//! types and power states, task states, stock status, pagination rules, the API
//! key format, the envelope's time format, and the built-in sandbox fleet and
//! catalogue. Storage, HTTP and the command line build on these types so that a
//! rule such as "a stock of 0 is `OUT_OF_STOCK`" is written exactly once.

pub mod api_key;
pub mod ids;
pub mod mode;
pub mod money;
pub mod net;
pub mod os;
pub mod pagination;
pub mod password;
pub mod product;
pub mod sandbox;
pub mod service;
pub mod task;
pub mod time;

/// Lets a word stored as text be read back with `TryFrom<String>`, the form
/// row mappers take; the rules stay in the type's `FromStr`.
macro_rules! try_from_string {
    ($($ty:ty),* $(,)?) => {
        $(impl TryFrom<String> for $ty {
            type Error = String;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        })*
    };
}

try_from_string!(
    Mode,
    OsType,
    VmType,
    PowerState,
    ServiceType,
    TaskKind,
    TaskStatus
);

pub use api_key::{ApiKeyError, GeneratedKey};
pub use mode::Mode;
pub use os::{OsChoice, OsType};
pub use pagination::{PageRequest, Pagination, PaginationError};
pub use product::{StockStatus, VmType};
pub use service::{PowerState, ServiceType};
pub use task::{TaskKind, TaskStatus};
