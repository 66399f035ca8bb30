/*
 * http.h — coyoted's event loop: one thread, one epoll set holding
 * libmicrohttpd's epoll descriptor (external-epoll mode: every MHD callback
 * runs on this thread), an eventfd the journals' group-commit threads poke
 * when something became durable, and a signalfd for SIGTERM/SIGINT.
 *
 * Requests that must wait — for durability (a mutating call under
 * --fsync=always) or for messages (long polling) — are suspended in MHD and
 * parked on a list; no thread waits for them. After each loop turn the list
 * is re-checked: durable ones are resumed and answered, pollers are retried
 * when the broker's change counter moved, at their wake time, or at their
 * deadline.
 */
#ifndef COYOTE_SERVER_HTTP_H
#define COYOTE_SERVER_HTTP_H

#include "broker/broker.h"
#include "server/config.h"

struct server;

/* Bind and prepare (the broker is already open). wakefd: an eventfd the
 * broker's on_durable callback writes (see server_wake). 0, or a negative
 * code with a log line. */
int server_start(const struct server_config *cfg, struct broker *b, int wakefd,
                 struct server **out);
/* The broker's on_durable callback: arg points to the eventfd (an int). */
void server_wake(void *arg);
/* Run until SIGTERM/SIGINT; then stop accepting, finish in-flight requests
 * (pollers answer with what they have), wait for durability, and return 0. */
int server_run(struct server *s);
void server_free(struct server *s);
/* The port actually bound (for --listen with port 0). */
unsigned server_port(const struct server *s);

#endif
