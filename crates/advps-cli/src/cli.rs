//! The command line's grammar. Operators and scripts depend on these exact
//! forms, so they change only by addition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The version and the commit it was built from.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ADVPS_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "advps",
    version = LONG_VERSION,
    about = "ADVPS API v1.0 server and its administration"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Directory holding the database and the secret key [default: ./advps-data]
    #[arg(long, global = true, env = "ADVPS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Optional TOML configuration file
    #[arg(long, global = true, env = "ADVPS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// postgres://... to share one PostgreSQL database between instances [default: SQLite in the data directory]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server until SIGINT or SIGTERM
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080]
        #[arg(long, env = "ADVPS_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
        /// Serve the API only; `advps worker` processes do the background work
        #[arg(long)]
        no_worker: bool,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9090)
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Run the background work only (tasks, expiry, webhook deliveries)
    Worker,
    /// Create or upgrade the database, then exit
    Migrate {
        /// Only list the migrations that would run
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a consistent backup of the database and its secret key while
    /// the server runs (PostgreSQL: the key only; use pg_dump for the data)
    Backup {
        /// The backup file to write (replaced if it exists; made 0600)
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Restore a backup into the data directory (--data-dir), which must be
    /// empty unless --force; checks the database's integrity and the key
    Restore {
        /// The backup file
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Replace the database and secret key of a directory that has them
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Check the configuration, database, secret key, nodes (images, address
    /// pools), stock, backlogs and disk space; exits non-zero on a problem
    Doctor,
    /// Manage accounts
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage live products and their stock
    #[command(subcommand)]
    Products(ProductsCommand),
    /// Manage hypervisor nodes and their inventory
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Manage the OS images rebuilds install
    #[command(subcommand)]
    Os(OsCommand),
    /// Manage IP address pools
    #[command(subcommand)]
    Ippools(IpPoolsCommand),
    /// Manage live services (instances bound to accounts)
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Manage webhook endpoints
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Read the audit log of mutating API calls
    Audit {
        /// Only this account's entries
        #[arg(long)]
        account: Option<String>,
        /// Only calls on this service
        #[arg(long)]
        service: Option<String>,
        /// How many entries, newest first
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// The passphrase that seals (or opens) a backup; none: not encrypted.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Name of an environment variable holding the passphrase
    #[arg(long, value_name = "VAR", conflicts_with = "passphrase_file")]
    pub passphrase_env: Option<String>,
    /// A file whose first line is the passphrase
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint for an account (prints its secret once)
    Add {
        #[arg(long)]
        account: String,
        #[arg(long, value_enum, default_value = "live")]
        mode: ModeArg,
        url: String,
        /// Event types, comma separated [default: all]
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// List endpoints
    List {
        #[arg(long)]
        account: Option<String>,
    },
    /// Delete an endpoint
    Remove { id: String },
    /// Show an endpoint's recent deliveries
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DriverArg {
    Lxd,
    Proxmox,
    /// KVM/QEMU hosts through libvirt (virsh)
    Libvirt,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Register a node
    Add {
        name: String,
        #[arg(long, value_enum)]
        driver: DriverArg,
        /// How to reach it: unix:///var/lib/lxd/unix.socket, or
        /// https://host:8443 with a client certificate; Proxmox VE:
        /// https://HOST:8006 (any node of the cluster); libvirt: qemu:///system,
        /// qemu+ssh://USER@HOST/system or qemu+tls://HOST/system
        #[arg(long)]
        endpoint: String,
        /// Proxmox VE API token, USER@REALM!TOKENID=SECRET; stored encrypted
        /// (prefer the environment variable to keep it off the command line)
        #[arg(long, env = "ADVPS_PVE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Proxmox VE: accept exactly the server certificate with this SHA-256
        /// fingerprint (AB:CD:..., as shown under the node's Certificates)
        #[arg(long, value_name = "SHA256", conflicts_with_all = ["ca", "server_cert"])]
        fingerprint: Option<String>,
        /// Client certificate (PEM) the node trusts; for https:// and
        /// qemu+tls:// endpoints
        #[arg(long, value_name = "FILE", requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// Private key (PEM) of the client certificate; stored encrypted
        #[arg(long, value_name = "FILE", requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// Accept exactly this server certificate (PEM), e.g. LXD's self-signed
        /// /var/lib/lxd/server.crt
        #[arg(long, value_name = "FILE", conflicts_with = "ca")]
        server_cert: Option<PathBuf>,
        /// Verify the server's certificate chain and name against this CA (PEM;
        /// for Proxmox VE, e.g. the cluster's /etc/pve/pve-root-ca.pem; for
        /// qemu+tls://, the CA of libvirtd's certificate)
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        // Boxed: the command is parsed once, and its other forms stay small.
        #[command(flatten)]
        ssh: Box<SshArgs>,
    },
    /// List nodes
    List,
    /// Give a Proxmox VE node SSH access for `pct exec`, replace it, or
    /// remove it; the API token and server trust stay as they are. For a
    /// qemu+ssh:// libvirt node: its sealed key and known_hosts
    SetSsh {
        name: String,
        /// Drop the node's SSH access instead
        #[arg(long, conflicts_with_all = ["hosts", "user", "key", "known_hosts"])]
        remove: bool,
        #[command(flatten)]
        ssh: Box<SshArgs>,
    },
    /// Import the node's instances as inventory (and report its images)
    Sync { name: String },
    /// List the inventory of one node or all
    Instances {
        #[arg(long)]
        node: Option<String>,
    },
    /// Count an instance as stock of a product (or of none)
    SetProduct {
        #[arg(long)]
        node: String,
        #[arg(long)]
        instance: String,
        /// A live product id; omit to remove the instance from stock
        #[arg(long)]
        product: Option<String>,
    },
}

/// SSH access to Proxmox VE nodes, for what only `pct exec` on a node can do
/// (a running container's root password), and to remote libvirt hosts
/// (`qemu+ssh://`, key and host keys only).
#[derive(Debug, Default, Args)]
pub struct SshArgs {
    /// Proxmox VE: sshd where `pct exec` sets container passwords, for every
    /// node (HOST[:PORT]) or one (NODE=HOST[:PORT]); repeatable
    #[arg(long = "ssh-host", value_name = "[NODE=]HOST[:PORT]")]
    pub hosts: Vec<String>,
    /// Proxmox VE: the account on the nodes that may run `pct exec`
    /// [default: root]
    #[arg(long = "ssh-user", value_name = "USER")]
    pub user: Option<String>,
    /// Proxmox VE: that account's private key (OpenSSH or PEM, without a
    /// passphrase); libvirt (qemu+ssh://): the key of the endpoint's user;
    /// stored encrypted
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Proxmox VE: known_hosts lines with the nodes' SSH host keys, the only
    /// keys accepted; libvirt (qemu+ssh://): the host's, likewise
    #[arg(long = "ssh-known-hosts", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OsTypeArg {
    #[value(alias = "linux")]
    Lxc,
    Vps,
}

impl From<OsTypeArg> for advps_domain::OsType {
    fn from(t: OsTypeArg) -> Self {
        match t {
            OsTypeArg::Lxc => advps_domain::OsType::Lxc,
            OsTypeArg::Vps => advps_domain::OsType::Vps,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum OsCommand {
    /// Map an OS slug of the rebuild API to an engine image
    Add {
        /// The slug clients send, e.g. debian-12
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long = "type", value_enum)]
        os_type: OsTypeArg,
        /// The engine's image name (an LXD alias)
        #[arg(long)]
        image: String,
        /// Only on this node [default: every node]
        #[arg(long)]
        node: Option<String>,
        /// The login name services installed with it get [default:
        /// Administrator for Windows slugs and names, root otherwise]
        #[arg(long)]
        username: Option<String>,
    },
    /// List OS images
    List,
    /// Delete every mapping of a slug (refused while a service runs it or a
    /// product installs it by default)
    Remove { slug: String },
}

#[derive(Debug, Subcommand)]
pub enum IpPoolsCommand {
    /// Create a pool of addresses
    Add {
        name: String,
        #[arg(long)]
        cidr: String,
        #[arg(long)]
        gateway: String,
        /// Only part of the CIDR, as FIRST-LAST
        #[arg(long)]
        range: Option<String>,
        /// Only for this node [default: every node]
        #[arg(long)]
        node: Option<String>,
    },
    /// List pools with their free addresses
    List,
    /// Delete a pool and its addresses (refused while one is assigned)
    Remove { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ServiceTypeArg {
    #[value(name = "LINUX", alias = "linux")]
    Linux,
    #[value(name = "VPS", alias = "vps")]
    Vps,
    #[value(name = "PROVISIONAL_VPS", alias = "provisional_vps")]
    ProvisionalVps,
}

impl From<ServiceTypeArg> for advps_domain::ServiceType {
    fn from(t: ServiceTypeArg) -> Self {
        match t {
            ServiceTypeArg::Linux => advps_domain::ServiceType::Linux,
            ServiceTypeArg::Vps => advps_domain::ServiceType::Vps,
            ServiceTypeArg::ProvisionalVps => advps_domain::ServiceType::ProvisionalVps,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Bind an instance to an account as a live service
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        node: String,
        /// The instance's name on the node
        #[arg(long)]
        instance: String,
        #[arg(long = "type", value_enum)]
        service_type: ServiceTypeArg,
        /// The OS slug the instance runs now
        #[arg(long)]
        os: Option<String>,
        /// Days until the service expires [default: 30]
        #[arg(long, default_value_t = 30)]
        validity: u32,
    },
    /// List services
    List {
        /// Include sandbox services
        #[arg(long)]
        all: bool,
    },
    /// Set when a service expires (RFC 3339 time, or seconds from now)
    SetExpiry {
        #[arg(long)]
        account: String,
        #[arg(long, value_enum, default_value = "live")]
        mode: ModeArg,
        service_id: String,
        /// e.g. 2026-12-31T00:00:00Z
        #[arg(
            long,
            conflicts_with = "in_seconds",
            required_unless_present = "in_seconds"
        )]
        at: Option<String>,
        /// Seconds from now (negative: in the past)
        #[arg(long = "in", allow_hyphen_values = true)]
        in_seconds: Option<i64>,
    },
    /// Unbind a live service: its address goes back to the pool and its
    /// instance back to inventory
    Remove {
        #[arg(long)]
        account: String,
        service_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account (with its sandbox fleet)
    Create { name: String },
    /// List accounts
    List,
    /// Add money to an account's wallet
    Credit {
        name: String,
        /// Amount like 100 or 12.50
        amount: String,
        /// Which wallet: live (real purchases) or test (the sandbox)
        #[arg(long, value_enum, default_value = "live")]
        mode: ModeArg,
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Show an account's wallet balances and ledger
    Wallet {
        name: String,
        #[arg(long, value_enum, default_value = "live")]
        mode: ModeArg,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Test,
    Live,
}

impl From<ModeArg> for advps_domain::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Test => advps_domain::Mode::Test,
            ModeArg::Live => advps_domain::Mode::Live,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once, alone on the last line
    Create {
        #[arg(long)]
        account: String,
        #[arg(long, value_enum)]
        mode: ModeArg,
    },
    /// List an account's keys (never the keys themselves)
    List {
        #[arg(long)]
        account: String,
    },
    /// Revoke a key at once
    Revoke {
        /// The key's id, as `keys list` shows it
        key_id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProductTypeArg {
    Vps,
    #[value(alias = "linux")]
    Lxc,
}

impl From<ProductTypeArg> for advps_domain::VmType {
    fn from(t: ProductTypeArg) -> Self {
        match t {
            ProductTypeArg::Vps => advps_domain::VmType::Vps,
            ProductTypeArg::Lxc => advps_domain::VmType::Lxc,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ProductsCommand {
    /// Create a live product
    Create {
        /// Product id [default: a generated prod_xxxxxx]
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        pack_name: String,
        #[arg(long = "type", value_enum)]
        vm_type: ProductTypeArg,
        /// Manual stock; without it, stock is derived from free inventory
        #[arg(long)]
        stock: Option<u32>,
        /// Upper bound of LOW_STOCK for this product [default: the server's]
        #[arg(long)]
        low_stock_threshold: Option<u32>,
        /// OS slug installed when a purchase names none
        #[arg(long)]
        default_os: Option<String>,
    },
    /// Add (or reprice) a RAM size of a live product
    AddSize {
        id: String,
        /// RAM like "4 GB"
        #[arg(long)]
        ram: String,
        /// Price per 30 days, like 9.99
        #[arg(long)]
        price: String,
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// Set the OS installed when a purchase names none
    SetDefaultOs { id: String, slug: String },
    /// List live products with their stock
    List,
    /// Set a manual stock, or go back to stock derived from inventory
    SetStock {
        id: String,
        /// The stock to show
        #[arg(required_unless_present = "auto", conflicts_with = "auto")]
        stock: Option<u32>,
        /// Derive stock from free inventory again
        #[arg(long)]
        auto: bool,
    },
    /// Take a product out of the catalogue: it is no longer listed or sold;
    /// its services go on
    Hide { id: String },
    /// Put a hidden product back in the catalogue
    Show { id: String },
    /// Delete a product and its sizes (refused while services or inventory
    /// use it)
    Remove { id: String },
}
