// Package pyreq understands Python distribution names (PEP 503/508),
// versions and version specifiers (PEP 440) and simple requirement lines
// (PEP 508 without environment markers or URLs), as found in
// requirements.txt files.
//
// It is pure logic: nothing here touches the network or the file system.
// Version specifiers are evaluated the way "pip check" evaluates already
// installed distributions, so pre-releases are always allowed to match.
package pyreq
