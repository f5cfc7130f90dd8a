/* dialect/istio/istio.h: Istio networking resources -> the proxy's model.
 *
 * A pure function: resources (a tr_rset snapshot: Kubernetes Services,
 * Endpoints/EndpointSlices, Pods and workload templates, Namespaces; Istio
 * VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Sidecar,
 * Gateway; security PeerAuthentication) and one workload in, the model
 * that workload's proxy runs out. No I/O, no clock, no randomness: the same
 * input gives the same model, byte for byte once written. The control plane
 * calls it for every proxy; `trellis ctl compile` prints it.
 *
 * Everything the resources say either shapes the model or is reported in d
 * (core/diag.h), with file, line, resource and field path: a warning when a
 * field is ignored or approximated (with the reason), an error when a
 * resource is refused (it is then left out entirely, as the Kubernetes API
 * server would have refused it). The model passes tr_config_validate() (the
 * compiler runs it): a proxy is never handed what `trellis proxy --check`
 * would refuse.
 *
 * What the model holds (docs/compat/istio.md has the details):
 *   - outbound: for each service port in the workload's scope (its Sidecar
 *     egress hosts and exportTo), a listener on outbound_ip:PORT whose route
 *     table has one virtual host per service on that port (domains: the FQDN,
 *     the short names Kubernetes DNS resolves from the workload's namespace,
 *     each also with :PORT), routes compiled from the VirtualServices for
 *     that host (first match wins, as Istio), else one default route; one
 *     cluster per (port, subset, host) named outbound|PORT|SUBSET|HOST with
 *     the endpoints of that subset and the DestinationRule's policy;
 *   - inbound: for each port of the workload that a Service targets, a
 *     listener on the workload's IP and that port forwarding to the
 *     application at app_ip:PORT, in the mTLS mode (STRICT, PERMISSIVE,
 *     DISABLE) the PeerAuthentications give that port (mesh, namespace and
 *     workload policies, portLevelMtls; PERMISSIVE when none says).
 */
#ifndef TR_DIALECT_ISTIO_H
#define TR_DIALECT_ISTIO_H

#include "config/model.h"
#include "core/diag.h"
#include "resource/resource.h"

struct tr_istio_options {
    const char *ns;           /* the workload: namespace */
    const char *name;         /* and name: a Pod, WorkloadEntry, or Deployment-like template */
    const char *trust_domain; /* default "cluster.local" */
    const char *root_ns;      /* Istio's root namespace; default "istio-system" */
    const char *outbound_ip;  /* default "127.0.0.1" */
    const char *app_ip;       /* where the application listens; default "127.0.0.1" */
    const char *cert_dir;     /* the workload's cert.pem, key.pem, ca.pem; default "certs" */
    const char *file_name;    /* name of the model in messages; default "compiled" */
    const char *dns_server;   /* "IP:PORT" the proxy asks for ServiceEntry names; NULL: the
                               * system's resolver */
    /* The mesh TLS context is the identity the proxy gets from the control
     * plane (tls[].from_control_plane) instead of files in cert_dir. */
    bool identity_from_control;
    const char *admin_address; /* "IP:PORT" of the proxy's admin endpoint; NULL: default */
    const char *admin_socket;  /* absolute path of its admin Unix socket; NULL: none */
    /* Sidecar traffic capture (trellis ctl iptables): outbound listeners
     * become virtual on 0.0.0.0:PORT (any service address), inbound ones
     * virtual on WORKLOAD_IP:PORT, behind capture listeners on
     * 127.0.0.1:15001 (outbound) and 0.0.0.0:15006 (inbound); upstream
     * sockets carry mark 1337. outbound_ip is then unused. */
    bool capture;
};

/* The model for one workload, validated. Resources with errors are left
 * out of it (as the API server would have refused them); the caller decides
 * whether to use a model when d->n_errors > 0 (`trellis ctl compile` does
 * not, the control plane keeps the last good model). NULL when the workload
 * does not exist or no valid model could be built (reported in d). */
struct tr_config *tr_istio_compile(const struct tr_rset *rs, const struct tr_istio_options *o,
                                   struct tr_diags *d);

/* The registry (Services, endpoints, Pods, ServiceEntries, WorkloadEntries
 * and their indexes) depends on the resources only, not on the workload: a
 * caller that compiles many workloads from one snapshot (the control plane)
 * builds it once and compiles each workload with it. The registry's
 * findings go to d once, at build; a compile with it reports only its own.
 * o->ns and o->name are not used; the other options must be the ones the
 * compiles use. The registry refers to rs (which must outlive it) and is
 * read-only once built: compiles may share it. NULL when out of memory
 * (reported in d). */
struct tr_istio_registry;
struct tr_istio_registry *tr_istio_registry_new(const struct tr_rset *rs,
                                                const struct tr_istio_options *o,
                                                struct tr_diags *d);
void tr_istio_registry_free(struct tr_istio_registry *r);
/* A registry for rs made of base's tables, without building them again:
 * for a snapshot whose differences from prev (the snapshot base, or the
 * last registry rebound from it, serves) are only in-place edits of
 * VirtualServices and DestinationRules, which no registry table reads, and
 * of Endpoints objects, whose services' endpoints are read again into base
 * (tr_istio_change_hosts says when: registry_kept). Compiles with it read
 * rs and give what a registry built from rs gives. base (and its snapshot)
 * must outlive it, and registries rebound from base before it serve their
 * snapshots no longer; freeing it frees nothing of base. NULL when it cannot
 * be done (EndpointSlices feed an edited service, base has taken many
 * patches, out of memory): build a registry from rs. */
struct tr_istio_registry *tr_istio_registry_rebind(struct tr_istio_registry *base,
                                                   const struct tr_rset *prev,
                                                   const struct tr_rset *rs);
/* tr_istio_compile over reg's resources, with its registry: the same model
 * byte for byte. The model owns all its memory (it may outlive reg). */
struct tr_config *tr_istio_compile_with(const struct tr_istio_registry *reg,
                                        const struct tr_istio_options *o, struct tr_diags *d);

/* ------------------------------------------------ incremental recompiles
 *
 * After a change the control plane compiles again only the workloads whose
 * model the change can reach (change.c says why this is safe). A set of
 * hosts is sorted keys of their first DNS label; `any` means every host. */
struct tr_istio_hosts {
    uint64_t *keys; /* malloc'd, sorted, unique */
    size_t n;
    bool any;
};
/* The hosts a model names: its clusters' and its virtual hosts'. A
 * wildcard domain makes it `any` (every change reaches it). false when out
 * of memory. */
bool tr_istio_model_hosts(const struct tr_config *cfg, struct tr_istio_hosts *out);
/* What changed between two snapshots (tr_rset_diff): the hosts of changed
 * Endpoints, EndpointSlices, mesh VirtualServices and DestinationRules
 * whose hosts are Services' or ServiceEntries'; `any` when anything else
 * changed. Empty when nothing did. *n_objects: how many objects differ.
 * *registry_kept (may be NULL): every difference is an edit in place (same
 * position in the load order) of a VirtualService, DestinationRule or
 * Endpoints object, so a registry of before may serve after
 * (tr_istio_registry_rebind). false when out of memory. */
bool tr_istio_change_hosts(const struct tr_rset *before, const struct tr_rset *after,
                           struct tr_istio_hosts *out, size_t *n_objects, bool *registry_kept);
/* Whether a change can alter a model naming these hosts. */
bool tr_istio_hosts_meet(const struct tr_istio_hosts *model, const struct tr_istio_hosts *change);
void tr_istio_hosts_free(struct tr_istio_hosts *s);

/* Check every resource without compiling for a workload (o->ns and o->name
 * unused), as `trellis ctl analyze`: everything the compiler reports, plus
 * what breaks traffic at run time: routes to subsets no DestinationRule
 * defines or to unknown hosts (errors), two VirtualServices for one host
 * (error), hosts that resolve to no service, rules after a catch-all, weights
 * not adding up to 100, DestinationRules for hosts nobody routes to, Service
 * ports that name no protocol, PeerAuthentications that lose to an older
 * one at their level (warnings). Returns 1 when an error was
 * found, 0 if none, -1 when out of memory. */
int tr_istio_analyze(const struct tr_rset *rs, const struct tr_istio_options *o,
                     struct tr_diags *d);

#endif
