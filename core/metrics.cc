#include "core/metrics.h"

#include <cstdio>

namespace postern {

std::string promEscape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string promSample(const std::string& name, const std::string& labels, double value) {
  char num[64];
  // Counts print as integers; measured values with enough digits for the text format (a
  // Unix time in seconds keeps its milliseconds).
  if (value == static_cast<double>(static_cast<int64_t>(value)) && value < 9e15 && value > -9e15) {
    std::snprintf(num, sizeof num, "%lld", static_cast<long long>(value));
  } else {
    std::snprintf(num, sizeof num, "%.15g", value);
  }
  return name + "{" + labels + "} " + num + "\n";
}

std::string promHistogram(const std::string& name, const std::string& labels,
                          const Histogram& h) {
  std::string out;
  uint64_t cumulative = 0;
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < Histogram::kBounds.size(); ++i) {
    cumulative += h.buckets[i];
    char le[32];
    std::snprintf(le, sizeof le, "%g", Histogram::kBounds[i]);
    out += promSample(name + "_bucket", labels + sep + "le=\"" + le + "\"",
                      static_cast<double>(cumulative));
  }
  out += promSample(name + "_bucket", labels + sep + "le=\"+Inf\"", static_cast<double>(h.count));
  out += promSample(name + "_sum", labels, h.sum);
  out += promSample(name + "_count", labels, static_cast<double>(h.count));
  return out;
}

void addFamilySample(std::string& out, const char* family, const std::string& labels, double v) {
  out.append(family).append("\t").append(promSample(family, labels, v));
}

void addFamilyHistogram(std::string& out, const char* family, const std::string& labels,
                        const Histogram& h) {
  const std::string text = promHistogram(family, labels, h);
  for (size_t pos = 0; pos < text.size();) {
    const size_t nl = text.find('\n', pos);
    out.append(family).append("\t").append(text, pos, nl + 1 - pos);
    pos = nl + 1;
  }
}

}  // namespace postern
