/* stream.c: responses produced by a worker thread through a pipe: lane
 * export tars, image build progress.  The client's pace is the pipe's. */
#include "server/server_internal.h"
#include "server/stream.h"

#include <fcntl.h>
#include <string.h>

typedef struct pipe_job {
    int   wfd;
    pipe_job_fn run;
    void *arg;
    void (*arg_free)(void *);
} pipe_job;

static void *job_main(void *p)
{
    pipe_job *job = p;
    job->run(job->wfd, job->arg);
    close(job->wfd);
    if (job->arg_free)
        job->arg_free(job->arg);
    free(job);
    return NULL;
}

static ssize_t read_pipe(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    int fd = (int)(intptr_t)cls;
    for (;;) {
        ssize_t n = read(fd, buf, max);
        if (n > 0)
            return n;
        if (n == 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (errno != EINTR)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void close_pipe(void *cls) { close((int)(intptr_t)cls); }

struct MHD_Response *stream_from_job(pipe_job_fn run, void *arg, void (*arg_free)(void *), cell_error *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        if (arg_free)
            arg_free(arg);
        util_fail_errno(err, "pipe");
        return NULL;
    }
    pipe_job *job = malloc(sizeof *job);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (job) {
        *job = (pipe_job){ .wfd = fds[1], .run = run, .arg = arg, .arg_free = arg_free };
        int pe = pthread_create(&t, &attr, job_main, job);
        if (pe != 0) {
            free(job);
            job = NULL;
            errno = pe;
        }
    } else {
        errno = ENOMEM;
    }
    pthread_attr_destroy(&attr);
    if (!job) {
        util_fail_errno(err, "worker thread");
        close(fds[0]);
        close(fds[1]);
        if (arg_free)
            arg_free(arg);
        return NULL;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, read_pipe,
                                                                  (void *)(intptr_t)fds[0], close_pipe);
    if (!resp)
        close(fds[0]);
    return resp;
}
