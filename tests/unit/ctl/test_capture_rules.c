/* Unit tests for ctl/capture_rules.c: the nftables script of `trellis ctl
 * iptables` (the whole text for the defaults, then each option's rule and
 * each refusal). Applying it is the integration test's (test_capture.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/capture_rules.h"

static char *script_ok(const struct tr_capture_rules_opts *o, bool remove)
{
    char *err = NULL;
    char *s = tr_capture_rules_script(o, remove, &err);
    if (s == NULL)
        fprintf(stderr, "unexpected: %s\n", err);
    assert_non_null(s);
    assert_null(err);
    return s;
}

static void script_err(const struct tr_capture_rules_opts *o, const char *want)
{
    char *err = NULL;
    assert_null(tr_capture_rules_script(o, false, &err));
    assert_non_null(err);
    assert_string_equal(err, want);
    free(err);
}

static void test_defaults(void **state)
{
    (void)state;
    struct tr_capture_rules_opts o;
    tr_capture_rules_defaults(&o);
    char *s = script_ok(&o, false);
    assert_string_equal(s, "table inet trellis\n"
                           "delete table inet trellis\n"
                           "table inet trellis {\n"
                           "    chain output {\n"
                           "        type nat hook output priority -100; policy accept;\n"
                           "        meta nfproto != ipv4 return\n"
                           "        meta l4proto != tcp return\n"
                           "        meta mark 1337 return\n"
                           "        ip daddr 127.0.0.0/8 return\n"
                           "        meta l4proto tcp counter redirect to :15001\n"
                           "    }\n"
                           "    chain prerouting {\n"
                           "        type nat hook prerouting priority -100; policy accept;\n"
                           "        meta nfproto != ipv4 return\n"
                           "        meta l4proto != tcp return\n"
                           "        iifname \"lo\" return\n"
                           "        meta l4proto tcp counter redirect to :15006\n"
                           "    }\n"
                           "}\n");
    free(s);
    /* Removal only ever names our table. */
    s = script_ok(&o, true);
    assert_string_equal(s, "table inet trellis\ndelete table inet trellis\n");
    free(s);
}

static void test_options(void **state)
{
    (void)state;
    struct tr_capture_rules_opts o;
    tr_capture_rules_defaults(&o);
    o.outbound_port = 16001;
    o.inbound_port = 16006;
    o.proxy_mark = 0;
    o.has_proxy_uid = true;
    o.proxy_uid = 1337;
    o.include_ports[o.n_include_ports++] = "80";
    o.include_ports[o.n_include_ports++] = "8000-8100";
    o.exclude_ports[o.n_exclude_ports++] = "22";
    o.exclude_outbound_ports[o.n_exclude_outbound_ports++] = "53";
    o.include_cidrs[o.n_include_cidrs++] = "198.18.0.0/15";
    o.exclude_cidrs[o.n_exclude_cidrs++] = "198.18.0.9";
    o.exclude_cidrs[o.n_exclude_cidrs++] = "198.19.0.0/16";
    char *s = script_ok(&o, false);
    assert_null(strstr(s, "meta mark"));
    assert_non_null(strstr(s, "        meta skuid 1337 return\n"));
    assert_non_null(strstr(s, "        ip daddr { 198.18.0.9, 198.19.0.0/16 } return\n"));
    assert_non_null(strstr(s, "        tcp dport { 53 } return\n"));
    assert_non_null(strstr(s, "        ip daddr != { 198.18.0.0/15 } return\n"));
    assert_non_null(strstr(s, "        meta l4proto tcp counter redirect to :16001\n"));
    assert_non_null(strstr(s, "        tcp dport { 22 } return\n"));
    assert_non_null(strstr(s, "        tcp dport != { 80, 8000-8100 } return\n"));
    assert_non_null(strstr(s, "        meta l4proto tcp counter redirect to :16006\n"));
    /* Exclusions come before inclusions, and both before the redirect. */
    assert_true(strstr(s, "ip daddr {") < strstr(s, "ip daddr !="));
    assert_true(strstr(s, "ip daddr !=") < strstr(s, "redirect to :16001"));
    free(s);
    /* "*" is every port / address: no rule. */
    tr_capture_rules_defaults(&o);
    o.include_ports[o.n_include_ports++] = "*";
    o.include_cidrs[o.n_include_cidrs++] = "*";
    s = script_ok(&o, false);
    assert_null(strstr(s, "dport"));
    assert_null(strstr(s, "daddr !="));
    free(s);
}

static void test_iptables(void **state)
{
    (void)state;
    struct tr_capture_rules_opts o;
    tr_capture_rules_defaults(&o);
    o.backend = TR_CAPTURE_IPTABLES;
    o.has_proxy_uid = true;
    o.proxy_uid = 1337;
    o.exclude_outbound_ports[o.n_exclude_outbound_ports++] = "53";
    o.exclude_cidrs[o.n_exclude_cidrs++] = "198.19.0.0/16";
    o.include_ports[o.n_include_ports++] = "8000-8100";
    char *s = script_ok(&o, false);
    assert_string_equal(s, "*nat\n"
                           ":TRELLIS_OUTPUT - [0:0]\n"
                           ":TRELLIS_PREROUTING - [0:0]\n"
                           "-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n"
                           "-A PREROUTING -p tcp -j TRELLIS_PREROUTING\n"
                           "-A TRELLIS_OUTPUT -m mark --mark 1337 -j RETURN\n"
                           "-A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN\n"
                           "-A TRELLIS_OUTPUT -d 127.0.0.0/8 -j RETURN\n"
                           "-A TRELLIS_OUTPUT -d 198.19.0.0/16 -j RETURN\n"
                           "-A TRELLIS_OUTPUT -p tcp --dport 53 -j RETURN\n"
                           "-A TRELLIS_OUTPUT -p tcp -j REDIRECT --to-ports 15001\n"
                           "-A TRELLIS_PREROUTING -i lo -j RETURN\n"
                           "-A TRELLIS_PREROUTING -p tcp --dport 8000:8100 -j REDIRECT "
                           "--to-ports 15006\n"
                           "COMMIT\n");
    free(s);
    /* Include CIDRs: a redirect per CIDR, nothing for the rest. */
    tr_capture_rules_defaults(&o);
    o.backend = TR_CAPTURE_IPTABLES;
    o.include_cidrs[o.n_include_cidrs++] = "198.18.0.0/15";
    s = script_ok(&o, false);
    assert_non_null(
        strstr(s, "-A TRELLIS_OUTPUT -d 198.18.0.0/15 -p tcp -j REDIRECT --to-ports 15001\n"));
    assert_null(strstr(s, "-A TRELLIS_OUTPUT -p tcp -j REDIRECT"));
    free(s);
    /* Removal is the commands, not a script; the same checks refuse input. */
    s = script_ok(&o, true);
    assert_string_equal(s, "");
    free(s);
    assert_non_null(strstr(tr_capture_rules_iptables_removal(),
                           "iptables -w -t nat -D OUTPUT -p tcp -j TRELLIS_OUTPUT\n"));
    o.exclude_cidrs[o.n_exclude_cidrs++] = "1.2.3.4 -j ACCEPT";
    script_err(&o, "--exclude-cidrs: \"1.2.3.4 -j ACCEPT\" is not an IPv4 address or CIDR");
}

static void test_refused(void **state)
{
    (void)state;
    struct tr_capture_rules_opts o;
    tr_capture_rules_defaults(&o);
    o.proxy_mark = 0;
    script_err(&o, "give --proxy-mark or --proxy-uid: the proxy's own connections would be "
                   "captured again");
    tr_capture_rules_defaults(&o);
    o.exclude_ports[o.n_exclude_ports++] = "70000";
    script_err(&o, "--exclude-ports: \"70000\" is not a port (1-65535) or a range A-B");
    tr_capture_rules_defaults(&o);
    o.include_ports[o.n_include_ports++] = "90-80";
    script_err(&o, "--include-ports: \"90-80\" is not a port (1-65535) or a range A-B");
    tr_capture_rules_defaults(&o);
    o.exclude_outbound_ports[o.n_exclude_outbound_ports++] = "53; flush ruleset";
    script_err(&o, "--exclude-outbound-ports: \"53; flush ruleset\" is not a port (1-65535) or "
                   "a range A-B");
    tr_capture_rules_defaults(&o);
    o.include_cidrs[o.n_include_cidrs++] = "10.0.0.0/33";
    script_err(&o, "--include-cidrs: \"10.0.0.0/33\" is not an IPv4 address or CIDR");
    tr_capture_rules_defaults(&o);
    o.exclude_cidrs[o.n_exclude_cidrs++] = "fd00::/8";
    script_err(&o, "--exclude-cidrs: \"fd00::/8\" is not an IPv4 address or CIDR");
    tr_capture_rules_defaults(&o);
    o.exclude_cidrs[o.n_exclude_cidrs++] = "10.0.0.0/8 } accept; {";
    script_err(&o, "--exclude-cidrs: \"10.0.0.0/8 } accept; {\" is not an IPv4 address or CIDR");
    /* A bad namespace name never reaches the file system. */
    char *err = NULL;
    assert_int_equal(tr_capture_rules_apply(TR_CAPTURE_NFTABLES, "", false, "../x", &err), -1);
    assert_string_equal(err, "--netns: \"../x\" is not a network namespace name");
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_iptables),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
