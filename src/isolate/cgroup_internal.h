/* cgroup_internal.h: the pure half of cgroup.c (mountinfo parsing, choosing
 * v2 or v1 per controller, paths, cpu.max text), exposed for unit tests. */
#ifndef CELL_CGROUP_INTERNAL_H
#define CELL_CGROUP_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "cell.h"

/* Controllers cell cares about, as bits and as indexes into cg_layout.v1_root. */
enum { CG_MEMORY_I, CG_PIDS_I, CG_CPU_I, CG_FREEZER_I, CG_NCTRL };
#define CG_MEMORY  (1u << CG_MEMORY_I)
#define CG_PIDS    (1u << CG_PIDS_I)
#define CG_CPU     (1u << CG_CPU_I)
#define CG_FREEZER (1u << CG_FREEZER_I)   /* v1 only: v2 freezes with cgroup.freeze */

/* What the host has mounted.  "" means absent. */
struct cg_layout {
    char     v2_root[PATH_MAX];            /* cgroup2 mount point */
    unsigned v2_ctrls;                     /* CG_* listed in its cgroup.controllers */
    char     v1_root[CG_NCTRL][PATH_MAX];  /* v1 hierarchy holding each controller */
};

/* One directory a cell's cgroup occupies: <root>/cell/<name>. */
struct cg_dir {
    char     root[PATH_MAX];
    char     path[PATH_MAX];
    int      v2;
    unsigned ctrls;    /* CG_* this directory is used for (v2: the ones to enable) */
    int      created;  /* set by cgroup.c once mkdir succeeded, so cleanup removes only ours */
};

#define CG_MAX_DIRS (1 + CG_NCTRL)
struct cg_plan {
    struct cg_dir dir[CG_MAX_DIRS];
    size_t        n;
};

#define CG_CPU_PERIOD_US 100000u

/* Feed one line of /proc/self/mountinfo; lines that are not cgroup mounts
 * are ignored.  The first mount of each hierarchy wins. */
void isolate_cgroup_parse_mountinfo_line(struct cg_layout *lay, const char *line);
/* Reset *lay and feed every line of a whole mountinfo text. */
void isolate_cgroup_parse_mountinfo(struct cg_layout *lay, const char *text);
/* CG_* bits named in a cgroup.controllers text ("cpuset cpu io memory pids"). */
unsigned isolate_cgroup_parse_controllers(const char *text);
/* Read /proc/self/mountinfo and the v2 root's cgroup.controllers. */
int isolate_cgroup_detect(struct cg_layout *lay, cell_error *err);

/* Choose, per controller, v2 if the v2 root offers it, else its v1
 * hierarchy; fail naming the limit if a requested limit has neither.  The
 * v2 directory is used if it serves any controller, or alone for tracking
 * when no v1 controller is mounted either. */
int isolate_cgroup_plan(const struct cg_layout *lay, const char *name, const cell_limits *lim,
                        struct cg_plan *out, cell_error *err);

/* 1 if a kernel command line turns socket memory accounting off
 * (cgroup.memory=...,nosocket,...): then no memory limit covers socket
 * buffers, on v1 or v2. */
int isolate_cgroup_cmdline_nosocket(const char *cmdline);

/* Quota in microseconds per CG_CPU_PERIOD_US for cpu_millis (1000 = one CPU). */
int isolate_cgroup_cpu_quota(uint32_t cpu_millis, uint64_t *quota_us, cell_error *err);
/* The cpu.max text for cpu_millis, e.g. 500 -> "50000 100000". */
int isolate_cgroup_cpu_max(uint32_t cpu_millis, char *buf, size_t size, cell_error *err);

#endif
