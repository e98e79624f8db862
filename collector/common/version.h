/* The stackwatch version every program reports (--version), and collectord's metrics. */
#ifndef STACKWATCH_COLLECTOR_VERSION_H
#define STACKWATCH_COLLECTOR_VERSION_H

#define STACKWATCH_VERSION "0.9.0"

#endif
