#pragma once
#include "sift.pb-c.h"
#include "sift_wire.h"
