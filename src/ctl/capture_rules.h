/* ctl/capture_rules.h: `trellis ctl iptables`, the capture rules of a
 * workload's network namespace (Istio's istio-iptables init container in
 * one command), written as one nftables table of our own, `table inet
 * trellis`: removing it is one command and nothing else is touched.
 *
 *   output     (locally generated TCP, the application's outbound calls):
 *              redirected to 127.0.0.1:outbound_port, except the proxy's own
 *              connections (socket mark and/or uid), loopback destinations,
 *              excluded CIDRs and ports, and, with include CIDRs, anything
 *              outside them;
 *   prerouting (TCP arriving from outside, not from lo): redirected to
 *              inbound_port, except excluded ports and, with include ports,
 *              any port outside them.
 *
 * The same rules can be written with iptables instead (backend iptables):
 * chains TRELLIS_OUTPUT and TRELLIS_PREROUTING of the nat table, jumped to
 * from OUTPUT and PREROUTING, loaded with `iptables-restore --noflush` after
 * the previous ones were removed (the jumps deleted, the chains flushed and
 * deleted), for systems whose other tools speak iptables.
 *
 * IPv4 only for now: IPv6 TCP is left alone (docs/config.md, "Capture").
 */
#ifndef TR_CTL_CAPTURE_RULES_H
#define TR_CTL_CAPTURE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TR_CAPTURE_MAX_LIST 64

enum tr_capture_backend {
    TR_CAPTURE_NFTABLES = 0, /* nft -f - */
    TR_CAPTURE_IPTABLES,     /* iptables-restore --noflush */
};

struct tr_capture_rules_opts {
    enum tr_capture_backend backend; /* default nftables */
    uint16_t outbound_port;          /* default 15001 */
    uint16_t inbound_port;           /* default 15006 */
    uint32_t proxy_mark;             /* 0: no mark rule */
    bool has_proxy_uid;
    uint32_t proxy_uid;
    /* Inbound ports (Istio -b / -d): "*" or none = all. */
    const char *include_ports[TR_CAPTURE_MAX_LIST];
    size_t n_include_ports;
    const char *exclude_ports[TR_CAPTURE_MAX_LIST];
    size_t n_exclude_ports;
    /* Outbound destination ports never captured (Istio -o). */
    const char *exclude_outbound_ports[TR_CAPTURE_MAX_LIST];
    size_t n_exclude_outbound_ports;
    /* Outbound CIDRs (Istio -i / -x): "*" or none = all. */
    const char *include_cidrs[TR_CAPTURE_MAX_LIST];
    size_t n_include_cidrs;
    const char *exclude_cidrs[TR_CAPTURE_MAX_LIST];
    size_t n_exclude_cidrs;
};

void tr_capture_rules_defaults(struct tr_capture_rules_opts *o);

/* What the backend is given. nftables: the script that replaces the
 * trellis table with the capture rules (input for `nft -f -`), or, remove:
 * that deletes it. iptables: the iptables-restore input (the removal of the
 * previous rules runs before it, see tr_capture_rules_apply), or, remove,
 * an empty text. NULL with *err (malloc'd) when an option is invalid (a
 * port, an IPv4 CIDR). The caller frees the text. */
char *tr_capture_rules_script(const struct tr_capture_rules_opts *o, bool remove, char **err);

/* The iptables commands that remove trellis's chains and the jumps to them
 * (each may fail when there is nothing to remove), one per line, for
 * --dry-run. */
const char *tr_capture_rules_iptables_removal(void);

/* Apply script (from tr_capture_rules_script with the same backend and
 * remove) inside network namespace netns (/run/netns/NAME, as `ip netns add`
 * creates) or the current one (NULL): nftables, `nft -f -`; iptables, the
 * removal commands, then (unless remove) `iptables-restore --noflush`.
 * Returns the last tool's exit status, or -1 with *err set. */
int tr_capture_rules_apply(enum tr_capture_backend backend, const char *script, bool remove,
                           const char *netns, char **err);

#endif
