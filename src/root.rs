//! The root context: compiles the configuration once per (re)configure and hands each
//! request context the resulting engine.

use crate::http::RequestFilter;
use crate::metrics::Metrics;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use tokengate_core::gate::Gate;
use tokengate_core::settings;

/// State shared by the root context and the request contexts of one VM (one worker).
pub struct Shared {
    pub gate: RefCell<Gate>,
    pub metrics: Metrics,
}

#[derive(Default)]
pub struct FilterRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for FilterRoot {}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        follow_host_log_level();
        let bytes = match proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        ) {
            Ok(Some(bytes)) if !bytes.is_empty() => bytes,
            Ok(_) => {
                log::error!("tokengate: invalid configuration: (top level): the plugin configuration is empty; tokengate needs at least \"providers\"");
                return false;
            }
            Err(status) => {
                log::error!(
                    "tokengate: cannot read the plugin configuration: {:?}",
                    status
                );
                return false;
            }
        };
        let (settings, warnings) = match settings::compile_bytes(&bytes) {
            Ok(compiled) => compiled,
            Err(e) => {
                log::error!("tokengate: invalid configuration: {}", e);
                return false;
            }
        };
        for warning in &warnings {
            log::warn!("tokengate: {}", warning);
        }
        log::info!(
            "tokengate: configured {} provider(s), {} rule(s)",
            settings.providers.len(),
            settings.routes.rules.len()
        );
        self.shared = Some(Rc::new(Shared {
            gate: RefCell::new(Gate::new(settings)),
            metrics: Metrics::define(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestFilter::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Lowers the SDK's log ceiling to Envoy's `wasm` level, so that debug lines are not even
/// formatted when Envoy would drop them.
fn follow_host_log_level() {
    if let Ok(level) = proxy_wasm::hostcalls::get_log_level() {
        // Critical maps to "off" in the SDK; keep errors flowing in that case.
        let level = if level == LogLevel::Critical {
            LogLevel::Error
        } else {
            level
        };
        proxy_wasm::set_log_level(level);
    }
}
