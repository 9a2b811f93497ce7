//! ferroswitch-policy: the node agent's NetworkPolicy compiler and
//! masquerade rules (docs/policy.md).
//!
//! Reads NetworkPolicy objects and an inventory of pods and namespaces
//! (YAML or JSON files, `-` for stdin), prints the ACL flows in ovs-ofctl
//! syntax (a file `flowctl add-flows` accepts), or installs them in switchd
//! in one atomic bundle that replaces the previous generation. Needs no
//! root: `compile` touches nothing, `apply` only the control socket. Exit
//! status as flowctl's: 0 done, 1 switchd refused, 2 bad input, 3 switchd
//! unreachable. Never panics on input.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cni_shim::policy::{
    apply, compile, load_inventory, load_policies, Compiled, MasqConfig, PolicyError, BASE_COOKIE,
    COOKIE_TAG_MASK, MASQ_COOKIE,
};

#[derive(Parser, Debug)]
#[command(
    name = "ferroswitch-policy",
    version,
    about = "Compile Kubernetes NetworkPolicies and masquerade rules to ferroswitch ACL flows"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the ACL flows of the policies for this node's pods.
    Compile {
        /// Pods (with ofport for this node's) and namespaces, YAML or JSON.
        #[arg(long, short)]
        inventory: String,
        /// NetworkPolicy files (documents, Lists; `-`: stdin).
        #[arg(required = true)]
        policies: Vec<String>,
    },
    /// Compile and install in switchd, replacing the previous policy flows
    /// atomically.
    Apply {
        /// Pods and namespaces, YAML or JSON (port names are resolved).
        #[arg(long, short)]
        inventory: String,
        /// NetworkPolicy files (none: remove every policy flow).
        policies: Vec<String>,
        /// switchd's control socket.
        #[arg(
            long,
            env = "FLOWCTL_SOCKET",
            default_value = "/run/ferroswitch/switchd.sock"
        )]
        socket: String,
        /// Bridge.
        #[arg(long, default_value = "br0")]
        bridge: String,
    },
    /// Print the masquerade flows of a configuration.
    Masq {
        /// ip-masq-agent-like configuration, YAML or JSON.
        config: String,
    },
    /// Install the masquerade flows, replacing the previous ones atomically.
    MasqApply {
        /// ip-masq-agent-like configuration, YAML or JSON.
        config: String,
        /// switchd's control socket.
        #[arg(
            long,
            env = "FLOWCTL_SOCKET",
            default_value = "/run/ferroswitch/switchd.sock"
        )]
        socket: String,
        /// Bridge.
        #[arg(long, default_value = "br0")]
        bridge: String,
    },
}

fn read(path: &str) -> Result<String, PolicyError> {
    let mut s = String::new();
    let r = if path == "-" {
        std::io::stdin().read_to_string(&mut s).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| s = t)
    };
    r.map_err(|e| PolicyError::Input(format!("reading {path}: {e}")))?;
    Ok(s)
}

fn compiled(
    inventory: &str,
    files: &[String],
    sd: Option<(&mut apply::Client, &str)>,
) -> Result<Compiled, PolicyError> {
    let mut inv = load_inventory(&read(inventory)?, inventory)?;
    if let Some((client, bridge)) = sd {
        apply::resolve_ports(client, bridge, &mut inv)?;
    }
    let mut pols = Vec::new();
    for f in files {
        pols.extend(load_policies(&read(f)?, f)?);
    }
    let c = compile(&pols, &inv)?;
    for w in &c.warnings {
        eprintln!("ferroswitch-policy: warning: {w}");
    }
    Ok(c)
}

fn print_compiled(c: &Compiled) {
    println!("# ferroswitch-policy: {} flows", c.flows.len());
    println!("# {BASE_COOKIE:#x}: hooks, established/related, commits");
    for (id, cookie) in &c.cookies {
        println!("# {cookie:#x}: {id}");
    }
    for s in &c.selected {
        println!(
            "# pod {} ofport/zone {}: ingress isolated by [{}], egress isolated by [{}]",
            s.pod,
            s.ofport,
            s.ingress.join(" "),
            s.egress.join(" ")
        );
    }
    for f in &c.flows {
        println!("{f}");
    }
}

fn run(cli: Cli) -> Result<(), PolicyError> {
    match cli.cmd {
        Cmd::Compile {
            inventory,
            policies,
        } => {
            print_compiled(&compiled(&inventory, &policies, None)?);
        }
        Cmd::Apply {
            inventory,
            policies,
            socket,
            bridge,
        } => {
            let mut client = apply::Client::connect(&socket)?;
            let c = compiled(&inventory, &policies, Some((&mut client, &bridge)))?;
            let r = apply::replace(&mut client, &bridge, BASE_COOKIE, COOKIE_TAG_MASK, &c.flows)?;
            eprintln!(
                "ferroswitch-policy: {} policies, {} pods selected: {} flows added, {} removed",
                c.cookies.len(),
                c.selected.len(),
                r["added"],
                r["deleted"]
            );
        }
        Cmd::Masq { config } => {
            let flows = MasqConfig::load(&read(&config)?, &config)?.flows()?;
            println!("# ferroswitch-policy masquerade, cookie {MASQ_COOKIE:#x}");
            for f in flows {
                println!("{f}");
            }
        }
        Cmd::MasqApply {
            config,
            socket,
            bridge,
        } => {
            let flows = MasqConfig::load(&read(&config)?, &config)?.flows()?;
            let mut client = apply::Client::connect(&socket)?;
            apply::replace(&mut client, &bridge, MASQ_COOKIE, u64::MAX, &flows)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferroswitch-policy: {e}");
            ExitCode::from(match e {
                PolicyError::Switchd(_) => 1,
                PolicyError::Input(_) | PolicyError::Policy(..) => 2,
                PolicyError::Unreachable(_) => 3,
            })
        }
    }
}
