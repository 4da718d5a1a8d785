/* stream.c: responses produced by a worker thread through a pipe: lane
 * export tars, image build progress.  The client's pace is the pipe's. */
#include "server/server_internal.h"
#include "server/stream.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

/* Whether the worker failed, shared by it and the response's reader; the
 * last of the two frees it. */
typedef struct pipe_status {
    atomic_int refs, failed;
} pipe_status;

static void status_put(pipe_status *st)
{
    if (atomic_fetch_sub(&st->refs, 1) == 1)
        free(st);
}

typedef struct pipe_job {
    int   wfd;
    pipe_job_fn run;
    void *arg;
    void (*arg_free)(void *);
    pipe_status *status;
} pipe_job;

static void *job_main(void *p)
{
    pipe_job *job = p;
    /* Set before the close, so the reader sees it at end of file. */
    if (job->run(job->wfd, job->arg) < 0)
        atomic_store(&job->status->failed, 1);
    close(job->wfd);
    if (job->arg_free)
        job->arg_free(job->arg);
    status_put(job->status);
    free(job);
    return NULL;
}

/* The response's end of the pipe and who asked for it. */
typedef struct pipe_reader {
    int   fd;
    srv  *s;
    char  token_id[16];
    pipe_status *status;
} pipe_reader;

static ssize_t read_pipe(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    pipe_reader *pr = cls;
    for (;;) {
        /* A worker may be silent for minutes (an image build's slow step):
         * the wait looks for a revoked token or a stopping daemon while it
         * waits; the worker then fails its next write and stops. */
        int ready = srv_conns_wait_readable(pr->s, pr->token_id, pr->fd);
        if (ready <= 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        ssize_t n = read(pr->fd, buf, max);
        if (n > 0)
            return n;
        if (n == 0)
            return atomic_load(&pr->status->failed) ? MHD_CONTENT_READER_END_WITH_ERROR
                                                    : MHD_CONTENT_READER_END_OF_STREAM;
        if (errno != EINTR)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void close_pipe(void *cls)
{
    pipe_reader *pr = cls;
    close(pr->fd);
    status_put(pr->status);
    free(pr);
}

struct MHD_Response *srv_stream_from_job(sreq *r, pipe_job_fn run, void *arg, void (*arg_free)(void *), cell_error *err)
{
    int fds[2];
    pipe_reader *pr = calloc(1, sizeof *pr);
    pipe_status *status = calloc(1, sizeof *status);
    if (!pr || !status || pipe2(fds, O_CLOEXEC) < 0) {
        if (arg_free)
            arg_free(arg);
        free(pr);
        free(status);
        util_fail_errno(err, "pipe");
        return NULL;
    }
    atomic_init(&status->refs, 2);
    atomic_init(&status->failed, 0);
    pr->status = status;
    pr->fd = fds[0];
    pr->s = r->s;
    snprintf(pr->token_id, sizeof pr->token_id, "%s", r->authed ? r->tok.id : "");
    pipe_job *job = malloc(sizeof *job);
    if (job) {
        *job = (pipe_job){ .wfd = fds[1], .run = run, .arg = arg, .arg_free = arg_free, .status = status };
        int pe = util_thread_detached(job_main, job);
        if (pe != 0) {
            free(job);
            job = NULL;
            errno = pe;
        }
    } else {
        errno = ENOMEM;
    }
    if (!job) {
        util_fail_errno(err, "worker thread");
        close(fds[0]);
        close(fds[1]);
        free(pr);
        free(status);
        if (arg_free)
            arg_free(arg);
        return NULL;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, read_pipe,
                                                                  pr, close_pipe);
    if (!resp)
        close_pipe(pr);
    else
        srv_conns_long_lived(r);
    return resp;
}
